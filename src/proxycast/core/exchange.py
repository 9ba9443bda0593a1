"""The exchange: the one place where a client's request meets an upstream.

A validated inbound request is routed by its model to a provider; then either the client's own bytes are
forwarded (the provider speaks the client's format) or the request goes through the internal model
(inbound dialect -> hub -> upstream format); the upstream's answer comes back the same way, streamed
or not. The exchange knows the two contracts of ``proxycast.formats.contracts`` and no format by name.

An upstream response opened here is owned by the request: the streamed body closes it when it ends or
its client goes away, and the request's resource stack (:func:`request_resources`) closes it in every
other case, so that an upstream connection never outlives its client.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from proxycast import formats
from proxycast.accounting.records import Accounting, current_record
from proxycast.config import Config
from proxycast.core import routing, rules
from proxycast.core.allocator import TRIM_AFTER_BYTES
from proxycast.core.answer import Answer, json_answer
from proxycast.core.attempts import Attempt, Plan
from proxycast.core.overload import Overload
from proxycast.core.redact import Redactor, config_secrets
from proxycast.core.relay import Converting, Relay
from proxycast.core.scope import request_resources
from proxycast.core.selection import Selector
from proxycast.core.signatures import StreamedText, TextSignatures
from proxycast.errors import InvalidRequestError, ProxycastError
from proxycast.formats import internal
from proxycast.formats.contracts import Estimate
from proxycast.upstream.provider import Provider, aclose_shielded

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Awaitable, Mapping

    import httpx

    from proxycast.formats.contracts import InboundDialect, InboundRequest, Translator
    from proxycast.formats.embeddings import EmbeddingsDialect

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@attrs.define(eq=False)
class Exchange:
    """What the requests of one worker share: the configuration and the providers (with the pooled
    upstream client inside them)."""

    config: Config
    providers: dict[str, Provider] = attrs.field(factory=dict)
    redact: Redactor = attrs.field(
        default=attrs.Factory(lambda self: Redactor(config_secrets(self.config)), takes_self=True)
    )
    """Hides the configured secrets in what goes to clients and logs."""
    inflight_body_bytes: int = 0
    """Request body bytes the requests in progress may hold (``server.max_inflight_body_bytes``)."""
    on_large_bodies: Callable[[], None] | None = None
    """Called when the body bytes held reach :data:`~proxycast.core.allocator.TRIM_AFTER_BYTES`
    (the allocator's trimmer watches the burst)."""
    clock: Callable[[], float] = time.monotonic
    """The key pools' clock (tests pass one they advance)."""
    _turns: dict[str, int] = attrs.field(factory=dict)
    """Per model served by several providers: how many requests it had (the rotation)."""
    accounting: Accounting | None = None
    """Clients, limits and usage (None: nothing is accounted, as in unit tests of the exchange)."""
    selector: Selector = attrs.field(
        default=attrs.Factory(
            lambda self: Selector(self.config.routing, self.clock), takes_self=True
        )
    )
    """The strategies' and the sessions' memory (``[routing] strategy``, ``affinity``)."""
    signatures: TextSignatures = attrs.field(factory=TextSignatures)
    """Signatures upstreams put on text parts, for clients that cannot carry them."""
    overload: Overload | None = None
    """The worker's overload manager (``server.max_memory_mb``; None: off): refuses new streams
    while it sheds them."""

    def reserve_body(self, size: int) -> Callable[[], None]:
        """Count ``size`` body bytes as held; the callable returned gives them back."""
        self.inflight_body_bytes += size
        if self.inflight_body_bytes >= TRIM_AFTER_BYTES and self.on_large_bodies is not None:
            self.on_large_bodies()
        return _Reservation(self, size)

    def connect(self, client: httpx.AsyncClient) -> None:
        """Use ``client`` (the worker's pooled client) for every provider."""
        self.providers = {
            p.name: Provider(
                p, formats.UPSTREAMS[p.type].bind(p), self.config.server, client, self.clock
            )
            for p in self.config.providers
        }
        if self.accounting is not None:  # the key pools' health is shared (with Redis)
            self.accounting.share_health({n: p.pool for n, p in self.providers.items()})

    def _route(self, model: str) -> tuple[routing.Route, Provider]:
        route = routing.resolve(model, self.config)
        return route, self.providers[route.provider.name]

    def plan(self, model: str, session: str | None = None) -> Plan:
        """The attempts that may serve ``model`` (404 when it routes nowhere): its own targets
        first, in the order its strategy ranks their healthy keys (``session``: for affinity), then
        its fallbacks."""
        own, fallbacks = routing.targets(model, self.config)
        if len(own) > 1:  # several providers list the model: each request starts at the next one
            turn = self._turns.get(model, 0)
            self._turns[model] = turn + 1
            start = turn % len(own)
            own = own[start:] + own[:start]
        targets = [(r, self.providers[r.provider.name]) for r in own + fallbacks]
        plan = Plan(targets, self.config.routing)
        if self.selector.active:
            units = {
                (provider.name, key): (route, provider, key)
                for route, provider in targets[: len(own)]
                for key in range(max(1, provider.pool.size))
                if provider.pool.available(key)
            }
            ranked = self.selector.rank(model, list(units), session)
            plan.preferred = [units[unit] for unit in ranked]
        return plan

    def routed(
        self,
        dialect: str,
        request: InboundRequest,
        headers: Mapping[str, str],
        convert: Callable[[], internal.Conversation],
    ) -> tuple[str, str | None]:
        """The model ``request`` goes to, and the rule that chose it (None: no rule matched, the
        model it names). ``convert`` reads it into the internal model, for rules that need it."""
        if not self.config.routes:
            return request.client_model, None
        record = current_record()
        client = record.client.name if record is not None else ""
        rule = rules.choose(
            self.config.routes, rules.Traits(dialect, request, headers, client, convert)
        )
        if rule is None:
            return request.client_model, None
        if record is not None:
            record.route = rule.name
        return rule.target, rule.name

    async def generate(
        self, dialect: InboundDialect, request: InboundRequest, headers: Mapping[str, str] = {}
    ) -> Answer:
        """A model's answer to ``request``, in the client's dialect, streamed or not: tried on the
        plan's targets and keys until one answers, while the client has received nothing
        (``headers``: the request's, for the rules and the session)."""
        if self.overload is not None:  # a stream refused while they are shed (the route said none)
            self.overload.admit(stream=request.stream)
        record = current_record()
        if self.accounting is not None:  # the client's allowlist, before anything else
            self.accounting.enter(request, dialect.name)
        conversation: list[internal.Conversation] = []  # converted once, when first needed

        def convert() -> internal.Conversation:
            if not conversation:
                conversation.append(dialect.request_to_internal(request))
            return conversation[0]

        target, rule = self.routed(dialect.name, request, headers, convert)
        session = rules.session_of(request, headers)
        if record is not None and session is not None:
            record.session = rules.recorded_session(session)
        board = self.accounting.sessions if self.accounting is not None else None
        if session is None or self.selector.settings(target).affinity != "session":
            board = None
        if board is not None and session is not None:  # where another instance last sent it
            label = await board.session_unit(session)
            if label is not None:
                self.selector.learn(target, session, label)
        plan = self.plan(target, session)
        if self.accounting is not None:  # the client's limits, before any upstream is called
            await self.accounting.admit(request, plan.targets[0][0].upstream_model)
        streams: dict[Attempt, Translator] = {}
        usages: dict[
            Attempt, internal.Usage
        ] = {}  # per attempt: with hedging, the winner's is the one

        async def attempt(chosen: Attempt) -> Answer:
            provider, upstream_model = chosen.provider, chosen.route.upstream_model
            model = request.client_model
            forward = dialect.forwards_to(provider.config, request)
            if forward:
                upstream_request = dialect.forward(request, upstream_model)
                translator: Translator | None = None
                if request.stream:
                    translator = dialect.forwarded_stream(request, provider.name, self.redact)
            else:
                upstream_request = provider.format.request_from_internal(
                    self.signatures.restore(convert()), upstream_model
                )
                translator = None
                if request.stream:
                    translator = Converting(
                        provider.format.stream_decoder(upstream_request),
                        dialect.stream_encoder(model, conversation[0], request),
                        provider.name,
                        self.redact,
                        StreamedText(self.signatures),
                    )
            capture = record.capture if record is not None else None
            if capture is None:
                response = await provider.open(upstream_request, chosen.key)
            else:  # [capture]: the request as sent upstream, its status and timings
                response = await capture.open(chosen, upstream_request)
            if translator is not None:
                on_end = None
                if record is not None and self.accounting is not None:
                    streams[chosen] = translator  # the winner's is the record's (hedging)
                    on_end = self.accounting.settler(record)
                return await _stream(provider, response, translator, on_end)
            if forward:
                data, usage = dialect.forwarded_reply(
                    await provider.read_all(response), model, provider.name
                )
                usages[chosen] = usage
                return Answer(data)
            body = await provider.read_object(response)
            replies = provider.format.reply_to_internal(body, upstream_request)
            self.signatures.remember_replies(replies)
            if replies:
                usages[chosen] = replies[0].usage
            return json_answer(
                dialect.reply_from_internal(replies, model, conversation[0], request)
            )

        run = self._measured(attempt)
        if record is not None and record.trace is not None:  # a span per attempt
            run = record.trace.traced(run, "chat")
        try:
            answer, chosen = await self._run(plan, run)
        finally:
            if record is not None:  # accounting: which attempts were made, and how each went
                record.attempts = [o.replace(": ", ":", 1) for o in plan.outcomes]
                if record.trace is not None:
                    record.trace.settled(plan.results)
        self.selector.remember(target, session, (chosen.provider.name, chosen.key))
        if board is not None and session is not None:
            board.remember_session(session, chosen.label)
        if rule is not None:
            answer.headers[rules.ROUTE_HEADER] = rule
        if record is not None:
            record.source = streams.get(chosen)
            record.usage = usages.get(chosen, record.usage)
            record.provider, record.key = chosen.provider.name, chosen.label
            record.upstream_model = chosen.route.upstream_model
            if self.accounting is not None and not request.stream:
                await self.accounting.settle(record)  # before the answer: the next request sees it
        answer.headers[PROVIDER_HEADER] = chosen.provider.name
        return answer

    def _measured(
        self, attempt: Callable[[Attempt], Awaitable[Answer]]
    ) -> Callable[[Attempt], Awaitable[Answer]]:
        """``attempt``, telling the selector what it needs: requests in flight per key (until the
        request ends, its stream included) and the time to an answer's first byte."""
        selector = self.selector
        if not (selector.counts_busy or selector.times):
            return attempt

        async def measured(chosen: Attempt) -> Answer:
            unit = (chosen.provider.name, chosen.key)
            ended = selector.started(unit) if selector.counts_busy else None
            start = self.clock()
            try:
                answer = await attempt(chosen)
            except BaseException:
                if ended is not None:
                    ended()
                raise
            if selector.times:
                selector.answered(unit, self.clock() - start)
            if ended is not None:
                request_resources().callback(ended)
            return answer

        return measured

    async def _run(
        self, plan: Plan, attempt: Callable[[Attempt], Awaitable[Answer]]
    ) -> tuple[Answer, Attempt]:
        """Run the plan's attempts one after another (or, with ``hedge_after``, a second beside a
        first that has produced nothing yet) until one answers."""
        hedge = self.config.routing.hedge_after
        if hedge <= 0:
            while (chosen := plan.next()) is not None:
                try:
                    answer = await attempt(chosen)
                except ProxycastError as error:
                    if not plan.failed(chosen, error):
                        raise
                    continue
                plan.succeeded(chosen)
                return answer, chosen
            raise plan.exhausted()
        return await _hedged(plan, attempt, hedge)

    async def embed(self, dialect: EmbeddingsDialect, request: InboundRequest) -> Answer:
        """The embeddings of ``request`` (its ``parsed`` is the client's body), in the client's
        shape: like :meth:`generate`, tried on the plan's targets and keys (retries, fallbacks, the
        keys' rotation and health), admitted against the client's limits and accounted."""
        record = current_record()
        if self.accounting is not None:  # the client's allowlist, then its limits: as for chat
            self.accounting.enter(request, "embeddings")
        plan = self.plan(request.client_model)
        if self.accounting is not None:
            await self.accounting.admit(request, plan.targets[0][0].upstream_model)
        body: dict[str, Any] = request.parsed
        model = request.client_model
        tokens: dict[Attempt, int] = {}
        estimated: dict[Attempt, bool] = {}

        async def attempt(chosen: Attempt) -> Answer:
            provider, upstream_model = chosen.provider, chosen.route.upstream_model
            if provider.config.speaks == dialect.native_type:
                response = await provider.open(
                    dialect.forward(request.text, request.spans, upstream_model), chosen.key
                )
                data, counted = dialect.forwarded_reply(
                    await provider.read_all(response), model, provider.name
                )
                if counted is None:  # the upstream does not say (Gemini): estimated
                    counted, estimated[chosen] = internal.estimated_tokens(len(request.text)), True
                tokens[chosen] = counted
                return Answer(data, response.status_code)
            converter = formats.EMBEDDINGS.get(provider.config.type)
            if converter is None:
                types = ", ".join(sorted(formats.EMBEDDINGS))
                raise InvalidRequestError(
                    f"Model {model!r} is served by provider {provider.name!r} "
                    f"({provider.config.type}), which has no embeddings API: route embedding "
                    f"models to a provider of type {types}.",
                    param="model",
                )
            wanted = dialect.read(body, provider.name)
            upstream_request = converter.request_from_internal(wanted, upstream_model)
            response = await provider.open(upstream_request, chosen.key)
            answer = converter.reply_to_internal(await provider.read_object(response), wanted)
            out, tokens[chosen] = dialect.reply_from_internal(answer, wanted, model, body)
            estimated[chosen] = answer.input_tokens is None
            headers = {ESTIMATE_HEADER: "estimate"} if estimated[chosen] else None
            return json_answer(out, headers=headers)

        run: Callable[[Attempt], Awaitable[Answer]] = attempt
        if record is not None and record.trace is not None:  # a span per attempt
            run = record.trace.traced(attempt, "embeddings")
        try:
            answer, chosen = await self._run(plan, run)
        finally:
            if record is not None:
                record.attempts = [o.replace(": ", ":", 1) for o in plan.outcomes]
                if record.trace is not None:
                    record.trace.settled(plan.results)
        if record is not None:
            record.usage = internal.Usage(
                input=tokens.get(chosen, 0), estimated=estimated.get(chosen, False)
            )
            record.provider, record.key = chosen.provider.name, chosen.label
            record.upstream_model = chosen.route.upstream_model
            if self.accounting is not None:
                await self.accounting.settle(record)  # embeddings count in usage like chat
        answer.headers[PROVIDER_HEADER] = chosen.provider.name
        return answer

    async def count_tokens(
        self, dialect: InboundDialect, request: InboundRequest, headers: Mapping[str, str] = {}
    ) -> Answer:
        """The number of input tokens ``request`` would take: counted by the upstream where it can,
        else estimated (and the answer says so: ``x-proxycast-token-count: estimate``)."""
        if self.accounting is not None:
            self.accounting.enter(request, dialect.name)
        conversation: list[internal.Conversation] = []

        def convert() -> internal.Conversation:
            if not conversation:
                conversation.append(dialect.request_to_internal(request))
            return conversation[0]

        target, _ = self.routed(dialect.name, request, headers, convert)
        route, provider = self._route(target)
        model = request.client_model
        if dialect.forwards_to(provider.config, request):
            response = await provider.open(dialect.forward(request, route.upstream_model))
            data = await provider.read_all(response)
            data, _ = dialect.forwarded_reply(data, model, provider.name)
            return Answer(data)
        count = provider.format.count_tokens(convert(), route.upstream_model)
        if isinstance(count, Estimate):
            return json_answer(
                dialect.tokens_counted(count.input_tokens), headers={ESTIMATE_HEADER: "estimate"}
            )
        response = await provider.open(count.request)
        counted = count.read(await provider.read_object(response))
        return json_answer(dialect.tokens_counted(counted))


PROVIDER_HEADER = "x-proxycast-provider"
"""Names the provider that answered (on streams too: headers go out with the first content)."""

ESTIMATE_HEADER = "x-proxycast-token-count"
"""Set to ``estimate`` on token counts that proxycast estimated (the upstream cannot count)."""


async def _stream(
    provider: Provider,
    response: httpx.Response,
    translator: Translator,
    on_end: Callable[[], Awaitable[None]] | None = None,
) -> Answer:
    """The streamed answer, once the upstream has sent content: what it sent before (its opening
    events) is held back, so that an error before any content can still be retried elsewhere.

    Raises:
        ProxycastError: the upstream failed (an error event, a cut, a transport failure) before
            sending any content.
    """
    close = _Close(provider.body(response), response)
    chunks = close.chunks
    # quart closes the body once it sends it; the request's resources close it if that never happens
    request_resources().push_async_callback(close)
    held = bytearray()
    try:
        while not translator.started:
            try:
                chunk = await chunks.__anext__()
            except StopAsyncIteration:
                held += translator.end()
                if translator.error is not None:
                    raise translator.error from None
                break
            held += translator.feed(chunk)
            if translator.error is not None:
                raise translator.error
    except BaseException:
        await close()  # noqa: ASYNC102 - shielded inside aclose_shielded; the generator's close is quick
        raise
    relay = Relay(chunks, translator, close, bytes(held) if held else b"", on_end)
    return Answer(relay, headers=SSE_HEADERS, content_type=translator.content_type)


class _Reservation:
    """Gives a request's body bytes back (an object, not a closure: every request holds one)."""

    __slots__ = ("_exchange", "_size")

    def __init__(self, exchange: Exchange, size: int) -> None:
        self._exchange = exchange
        self._size = size

    def __call__(self) -> None:
        self._exchange.inflight_body_bytes -= self._size


class _Close:
    """Closes an open stream: its body, then its response (an object, not a closure: every open
    stream holds one)."""

    __slots__ = ("chunks", "response")

    def __init__(self, chunks: AsyncGenerator[bytes, None], response: httpx.Response) -> None:
        self.chunks = chunks
        self.response = response

    async def __call__(self) -> None:
        await self.chunks.aclose()
        await aclose_shielded(self.response)


async def _hedged(
    plan: Plan, attempt: Callable[[Attempt], Awaitable[Answer]], hedge: float
) -> tuple[Answer, Attempt]:
    """Attempts raced two at most: when the one in flight has produced nothing after ``hedge``
    seconds, the next starts beside it; the first to answer wins and the other is cancelled (its
    upstream connection closed at once, as for a client that left)."""
    send, receive = trio.open_memory_channel[tuple[Attempt, Answer | ProxycastError]](2)
    winner: tuple[Answer, Attempt] | None = None
    failure: ProxycastError | None = None

    async with trio.open_nursery() as nursery:

        def launch() -> bool:
            chosen = plan.next()
            if chosen is None:
                return False
            nursery.start_soon(run, chosen)
            return True

        async def run(chosen: Attempt) -> None:
            try:
                outcome: Answer | ProxycastError = await attempt(chosen)
            except ProxycastError as error:
                outcome = error
            try:
                await send.send((chosen, outcome))
            except BaseException:  # cancelled as the other won: its answer is never sent
                await _discard(outcome)  # noqa: ASYNC102 - shielded inside
                raise

        in_flight = int(launch())
        while in_flight:
            deadline = hedge if in_flight == 1 else math.inf
            with trio.move_on_after(deadline):
                chosen, outcome = await receive.receive()
                in_flight -= 1
                if isinstance(outcome, Answer):
                    plan.succeeded(chosen)
                    winner = (outcome, chosen)
                    nursery.cancel_scope.cancel()
                    break
                if not plan.failed(chosen, outcome):
                    failure = outcome
                    nursery.cancel_scope.cancel()
                    break
                if in_flight == 0:
                    in_flight += launch()
                continue
            in_flight += launch()  # the deadline passed: a second attempt beside the first
            if in_flight == 1:  # nothing left to hedge with: wait for the one in flight
                hedge = math.inf
    while True:  # an answer that came in the same instant as the winner's: closed at once
        try:
            _, outcome = receive.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        await _discard(outcome)
    if winner is not None:
        return winner
    raise failure if failure is not None else plan.exhausted()


async def _discard(outcome: Answer | ProxycastError) -> None:
    """Close an answer nobody will read (a hedged attempt that lost): its upstream connection too."""
    if isinstance(outcome, Answer) and isinstance(outcome.body, Relay):
        with trio.CancelScope(shield=True):
            await outcome.body.aclose()
