"""Accounting for each request: who asked (the client), whether its limits admit it, what it used and
cost, and the traces it leaves (the ledger row, the metrics, the access log line, ``x-request-id``).

A :class:`Record` follows one HTTP request from its first byte to the end of its answer (streamed
answers included, and answers cut short by a client that left). The app opens it around the whole
request (:meth:`Accounting.request`); the exchange fills in the route, the attempts and the usage; when
the request is over the reservation is settled with the actual usage, and the row is buffered for the
ledger. Limits are admitted before any upstream is called (:meth:`Accounting.admit`).
"""

from __future__ import annotations

import contextvars
import copy
import logging
import math
import os
import re
import time
from typing import TYPE_CHECKING

import attrs
import trio

from proxycast.accounting import accesslog
from proxycast.accounting.capture import Capture, Capturer
from proxycast.accounting.clients import UNLIMITED, Client, Directory
from proxycast.accounting.feed import Feed
from proxycast.accounting.keystore import RuntimeKeys, client_of, open_store
from proxycast.accounting.metrics import Metrics
from proxycast.accounting.prices import Price, cost, price_of
from proxycast.errors import ModelNotFoundError, RateLimitedError
from proxycast.formats import internal
from proxycast.formats.contracts import Translator
from proxycast.home import data_dir
from proxycast.ledger.rows import Row
from proxycast.ledger.writer import open_writer
from proxycast.state import (
    Admitted,
    Ask,
    Limiter,
    Limits,
    Refused,
    SessionBoard,
    SharedState,
)
from proxycast.state.keys import KeyStoreUnavailableError
from proxycast.state.local import LocalLimiter

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from hypercorn.typing import ASGISendCallable, ASGISendEvent, HTTPScope

    # a Record is never structured (attrs need not resolve its annotations); imported at run time,
    # this would import opentelemetry with traces off
    from proxycast.accounting.tracing import RequestTrace, Tracing  # noqa: TC004
    from proxycast.config import Config
    from proxycast.core.redact import Redactor
    from proxycast.formats.contracts import InboundRequest
    from proxycast.upstream.keys import KeyPool

log = logging.getLogger("proxycast")

REQUEST_ID = "x-request-id"
_VALID_ID = re.compile(r"[\x21-\x7e]{1,128}")
UNCOUNTED = frozenset({"/ui/api/live"})
"""Paths left out of ``proxycast_in_flight_requests``: streams that last as long as a page is open."""


@attrs.define(eq=False, kw_only=True)
class Record:
    """What is known of one request (mutable: filled in as the request goes)."""

    request_id: str
    method: str
    path: str
    at: float
    """Wall-clock arrival (Unix seconds)."""
    started: float
    """``trio.current_time()`` at arrival."""
    client: Client = UNLIMITED
    api: str = ""
    """The inbound API, once the request reached a model route (then it has a ledger row)."""
    model: str = ""
    provider: str = ""
    upstream_model: str = ""
    key: str = ""
    attempts: list[str] = attrs.field(factory=list)
    """``provider#N:outcome`` for each upstream attempt."""
    route: str = ""
    """The ``[[routes]]`` rule that chose the model, if one did."""
    session: str = ""
    """The request's session, as the ledger keeps it (``core.rules.recorded_session``)."""
    status: int = 0
    error_type: str = ""
    usage: internal.Usage | None = None
    prompt_estimate: int = 0
    """The request's input tokens, estimated from its body (:func:`estimate_tokens`): what is
    counted when the upstream reports none."""
    source: Translator | None = None
    """A streamed answer's translator, read for its usage when the stream is over."""
    streamed: bool = False
    ttft: float | None = None
    completed: bool = False
    """True once the whole answer was sent."""
    admitted: Admitted | None = None
    headers: dict[str, str] = attrs.field(factory=dict)
    """Headers added to the answer (``x-ratelimit-*``)."""
    trace: RequestTrace | None = None
    """Its spans, when traces are on (``[telemetry]``)."""
    capture: Capture | None = None
    """What is kept of its bodies (``[capture]``; None: nothing)."""


_current: contextvars.ContextVar[Record | None] = contextvars.ContextVar(
    "proxycast_record", default=None
)


def current_record() -> Record | None:
    """The record of the request being handled (None outside a request)."""
    return _current.get()


def on_model_route(api: str, model: str, streamed: bool) -> None:
    """A request with an accepted key reached a model route: it gets a ledger row whatever happens
    next (bad input, a model no provider serves, its client gone before its body arrived), with
    what the route says of it; :meth:`Accounting.enter` fills in what the request says once read."""
    record = _current.get()
    if record is not None:
        record.api, record.model, record.streamed = api, model, streamed


def _request_id(scope: HTTPScope) -> str:
    for name, value in scope["headers"]:
        if name.lower() == b"x-request-id":
            text = value.decode("latin-1")
            if _VALID_ID.fullmatch(text):
                return text
    return os.urandom(16).hex()  # a uuid4's hex but its version bits, without the UUID object


def estimate_tokens(request: InboundRequest) -> int:
    """The input tokens a request is admitted on: about four characters a token, of its body."""
    return math.ceil(len(request.text or request.raw) / 4)


def _seconds(value: float) -> str:
    """A duration as OpenAI writes it in ``x-ratelimit-reset-*`` (``20ms``, ``1.5s``, ``6m0s``)."""
    if value < 1:
        return f"{max(0, math.ceil(value * 1000))}ms"
    if value < 60:
        return f"{round(value, 3):g}s"
    minutes, seconds = divmod(value, 60)
    return f"{int(minutes)}m{round(seconds):d}s"


class Accounting:
    """The accounting of one worker.

    Args:
        config: the configuration.
        redact: hides configured secrets (applied to the access log, as to every log).
    """

    def __init__(self, config: Config, redact: Redactor) -> None:
        self.config = config
        self.metrics = Metrics(config)
        self.keys = RuntimeKeys(open_store(config), self._runtime_names)
        """The client keys made at run time (``proxycast keys``), kept in the state database."""
        self._load_keys()
        self.directory = Directory.of(config.server.api_keys, config.clients, self.keys.clients)
        self.redact = redact
        self.limiter: Limiter | None = None
        self.shared: SharedState | None = None
        """Shares the key health between workers too: Redis (``[state] redis_url``), or the
        machine's SQLite file with ``--workers N``."""
        self.sessions: SessionBoard | None = None
        """Shares the sessions' keys between instances (affinity): Redis only."""
        if config.state.redis_url:
            from proxycast.state.redis import RedisState

            self.limiter = self.shared = self.sessions = RedisState(
                config.state.redis_url,
                _local_limiter(config),
                fail_open=config.state.fail_open,
                prefix=config.state.redis_prefix,
                cluster=config.state.redis_cluster,
                on_call=self._redis_called,
                on_status=self._redis_status,
            )
            self._redis_status(True)
        elif config.server.workers > 1 and config.state.scope == "machine":
            from proxycast.state.sqlite import SQLiteLimiter

            self.limiter = self.shared = SQLiteLimiter(data_dir() / "limits.db")
        else:  # a runtime key with limits may come at any time
            self.limiter = _one_worker_limiter(config)
        self.ledger = open_writer(config.ledger)
        self.capture = self._capturer(config, redact)
        self._prices: dict[str, Price | None] = {}
        self.feed = Feed(redact)
        """The live feed of finished requests (the dashboard's live traffic)."""
        self.on_finish: Callable[[Record], None] | None = None
        """Tests: called with each finished record."""
        self.tracing: Tracing | None = None
        """The worker's tracer (``[telemetry] otlp_endpoint``; None: off, opentelemetry unimported).
        Kept by a reload (a change of ``[telemetry]`` needs a restart)."""
        if config.telemetry.otlp_endpoint:
            from proxycast.accounting.tracing import Tracing

            self.tracing = Tracing(config.telemetry)

    def reconfigured(self, config: Config, redact: Redactor) -> Accounting:
        """The accounting of a reloaded configuration: its clients, prices and access log, with this
        one's counts, key health, ledger writer, metrics and live feed (the same objects: a
        reload neither resets a limit nor loses a ledger row). ``[state]`` and ``[ledger]`` are
        kept as they are (they need a restart). A limiter is opened when limits appear for the
        first time (the caller runs :meth:`background` for it)."""
        new = copy.copy(self)  # every attribute shared, but for what the configuration decides
        new.config = config
        new.directory = Directory.of(config.server.api_keys, config.clients, self.keys.clients)
        shadowed = sorted(self.keys.clients.names & {c.name for c in config.clients})
        if shadowed:
            log.warning(
                "[[clients]] now names %s, a runtime key's name too: the file's entry is used and "
                "the runtime key refused (revoke it, or rename the entry)",
                ", ".join(shadowed),
            )
        new.redact = redact
        if new.limiter is None:
            new.limiter = _one_worker_limiter(config)
        new._prices = {}
        new.capture = new._capturer(config, redact)
        return new

    def _capturer(self, config: Config, redact: Redactor) -> Capturer | None:
        """Request capture (``[capture]``), in the ledger's database; None when it is off.
        The captures kept are pruned at their retention either way (turned off, those it took
        still go)."""
        if self.ledger is not None:
            self.ledger.capture_retention = config.capture.retention_days * 86400
        if not config.capture.enabled or self.ledger is None:
            return None
        return Capturer(config.capture, redact, self.ledger)

    def background(self, previous: Accounting) -> list[Callable[[], Awaitable[None]]]:
        """What of this accounting must run that ``previous``'s :meth:`run` does not (a limiter
        opened by :meth:`reconfigured`)."""
        if self.limiter is not previous.limiter and isinstance(self.limiter, LocalLimiter):
            return [self.limiter.run]
        return []

    def _load_keys(self) -> None:
        """The runtime keys as the store has them now (before the first request: :meth:`run` then
        follows their changes)."""
        try:
            self.keys.clients.set([client_of(k) for k in self.keys.store.load()])
        except KeyStoreUnavailableError as exc:  # away at start: they come when it is back (run)
            log.warning("could not read the runtime client keys: %s", exc)
        except Exception:
            log.exception("could not read the runtime client keys")
        self._runtime_names(self.keys.clients.names)

    def _runtime_names(self, names: frozenset[str]) -> None:
        self.metrics.runtime_clients = names

    def price(self, upstream_model: str) -> Price | None:
        """The ``[prices]`` entry of ``upstream_model`` (looked up once per model)."""
        if upstream_model not in self._prices:
            if len(self._prices) > 4096:  # upstream model names come from the configuration
                self._prices.clear()
            self._prices[upstream_model] = price_of(self.config.prices, upstream_model)
        return self._prices[upstream_model]

    def _redis_called(self, what: str) -> None:
        if self.metrics.redis_calls is not None:
            self.metrics.redis_calls.labels(what).inc()

    def _redis_status(self, up: bool) -> None:
        if self.metrics.redis_up is not None:
            self.metrics.redis_up.set(1 if up else 0)

    def share_health(self, pools: Mapping[str, KeyPool]) -> None:
        """Share the health of these key pools with the other workers (see :attr:`shared`), and
        what their answers say is left of each key with the metrics."""
        if self.shared is not None:
            self.shared.watch(pools)
        if self.config.server.metrics:
            self.metrics.watch_quotas(pools)

    async def run(self) -> None:
        """The background work of the worker (writing the ledger, syncing the shared state), until
        cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.keys.run)
            if self.ledger is not None:
                nursery.start_soon(self.ledger.run)
            if self.shared is not None:
                nursery.start_soon(self.shared.run)
            elif isinstance(self.limiter, LocalLimiter):
                nursery.start_soon(self.limiter.run)

    async def aclose(self) -> None:
        """Write what the ledger still buffers and close the files (at the end of the drain)."""
        with trio.CancelScope(shield=True):
            if self.ledger is not None:
                await self.ledger.aclose()
            if self.limiter is not None:
                await self.limiter.aclose()
            if self.tracing is not None:
                await self.tracing.aclose()
            await self.keys.aclose()

    def request(self, scope: HTTPScope, send: ASGISendCallable) -> _Tracking:
        """One HTTP request's record, made the current one. Its ``tracked`` is the ``send`` to use
        (it adds ``x-request-id`` and sees the answer go out); calling it (awaited, shielded, once
        the request is over: the last of the request's resources) finishes the record."""
        return _Tracking(self, scope, send)

    def authenticated(self, client: Client) -> None:
        record = current_record()
        if record is not None:
            record.client = client

    def enter(self, request: InboundRequest, api: str) -> None:
        """A model route's request was read: its API, model and stream flag for its ledger row
        (which it has since it reached the route, :func:`on_model_route`).

        Raises:
            ModelNotFoundError: the client may not use the model (it is told the model does not
                exist, as for one no provider serves).
        """
        record = current_record()
        if record is not None:
            record.api, record.model, record.streamed = api, request.client_model, request.stream
            record.prompt_estimate = estimate_tokens(request)
            if self.capture is not None:
                record.capture = self.capture.start(request)
        self.allow(UNLIMITED if record is None else record.client, request.client_model)

    async def admit(self, request: InboundRequest, upstream_model: str) -> None:
        """Check the client's limits before any upstream is called.

        Raises:
            RateLimitedError: over ``rpm``/``tpm`` (``rate_limit_exceeded``) or a budget
                (``insufficient_quota``).
        """
        record = current_record()
        client = record.client if record is not None else UNLIMITED
        if record is not None:
            record.upstream_model = upstream_model
        config = client.config
        if config is None or not config.limited or self.limiter is None:
            return
        tokens = estimate_tokens(request)
        price = self.price(upstream_model)
        ask = Ask(client=config.name, tokens=tokens, usd=cost(price, internal.Usage(input=tokens)))
        limits = Limits(
            rpm=config.rpm,
            tpm=config.tpm,
            usd_per_day=config.max_usd_per_day,
            usd_per_month=config.max_usd_per_month,
        )
        outcome = await self.limiter.admit(ask, limits)
        headers = self._limit_headers(limits, outcome)
        if isinstance(outcome, Refused):
            raise _refusal(outcome, headers)
        if record is not None:
            record.admitted = outcome
            record.headers.update(headers)

    @staticmethod
    def _limit_headers(limits: Limits, outcome: Admitted | Refused) -> dict[str, str]:
        headers = {}
        if limits.rpm is not None and outcome.remaining_requests is not None:
            headers["x-ratelimit-limit-requests"] = str(limits.rpm)
            headers["x-ratelimit-remaining-requests"] = str(max(0, outcome.remaining_requests))
            if isinstance(outcome, Refused):
                headers["x-ratelimit-reset-requests"] = _seconds(outcome.reset_requests)
        if limits.tpm is not None and outcome.remaining_tokens is not None:
            headers["x-ratelimit-limit-tokens"] = str(limits.tpm)
            headers["x-ratelimit-remaining-tokens"] = str(max(0, outcome.remaining_tokens))
            if isinstance(outcome, Refused):
                headers["x-ratelimit-reset-tokens"] = _seconds(outcome.reset_tokens)
        return headers

    def allow(self, client: Client, model: str) -> None:
        """Raises ``ModelNotFoundError`` when ``client`` may not use ``model``."""
        if not client.allows(model):
            raise ModelNotFoundError(
                f"The model {model!r} does not exist or is not served by this gateway. "
                "GET /v1/models lists the models it serves.",
                param="model",
                code="model_not_found",
            )

    async def settle(self, record: Record) -> None:
        """Replace the request's reservation with its usage (once; the estimate stays when no usage
        was reported). The exchange calls it as soon as the usage is known, before the answer's
        end goes out; the end of the request does it otherwise."""
        admitted, record.admitted = record.admitted, None
        if admitted is None or self.limiter is None:
            return
        usage = _usage_of(record)
        if usage is None:  # no upstream answered: nothing was used
            await self.limiter.settle(admitted, 0, 0.0)
            return
        spent = cost(self.price(record.upstream_model), usage)
        await self.limiter.settle(admitted, _total(usage), spent)

    def settler(self, record: Record) -> Callable[[], Awaitable[None]]:
        """``settle(record)`` as a callable for later (a stream's end)."""
        return _Settle(self, record)

    async def _finish(self, record: Record) -> None:
        await self.settle(record)
        usage = _usage_of(record) or internal.Usage()
        spent = cost(self.price(record.upstream_model), usage)
        duration = trio.current_time() - record.started
        status = record.status if record.completed or record.status else 499
        failure = None if record.source is None else record.source.error
        if failure is not None and status < 400:  # the stream ended in an error frame
            status, record.error_type = failure.status, failure.kind
        if record.trace is not None:
            record.trace.finish(record, status, usage)
        if record.capture is not None and self.capture is not None:
            self.capture.finish(record, record.capture, status)
        if record.api and self.ledger is not None:
            self.ledger.record(
                Row(
                    time=record.at,
                    request_id=record.request_id,
                    client=record.client.name,
                    api=record.api,
                    model=record.model,
                    provider=record.provider,
                    upstream_model=record.upstream_model,
                    key=record.key,
                    status=status,
                    error_type=record.error_type,
                    input_tokens=usage.input,
                    output_tokens=usage.output,
                    cache_read_tokens=usage.cache_read,
                    cache_write_tokens=usage.cache_write,
                    reasoning_tokens=usage.reasoning,
                    cost_usd=spent,
                    duration=duration,
                    ttft=record.ttft,
                    attempts=",".join(record.attempts),
                    streamed=record.streamed,
                    disconnected=not record.completed,
                    estimated=usage.estimated,
                    route=record.route,
                    session=record.session,
                )
            )
        self._count(record, usage, spent, duration, status)
        accesslog.write(
            self.config.server.access_log,
            fields := {
                "request_id": record.request_id,
                "client": record.client.name,
                "method": record.method,
                "path": record.path,
                "status": status,
                "model": record.model,
                "provider": record.provider,
                "tokens": {
                    "input": usage.input + usage.cache_read + usage.cache_write,
                    "output": usage.output,
                },
                "duration": round(duration, 6),
                "ttft": None if record.ttft is None else round(record.ttft, 6),
                "attempts": record.attempts,
            },
            self.redact,
        )
        if record.path.startswith("/v1/"):  # gateway traffic, not the dashboard's own calls
            self.feed.publish(record.client, {"time": record.at, "key": record.key, **fields})
        if self.on_finish is not None:
            self.on_finish(record)

    def _count(
        self, record: Record, usage: internal.Usage, spent: float, duration: float, status: int
    ) -> None:
        if not record.api or not self.config.server.metrics:
            return
        m = self.metrics
        client, model = m.client(record.client.name), m.model(record.model)
        provider = m.provider(record.provider)
        m.child(m.requests, client, model, provider, str(status)).inc()
        for kind, value in (
            ("input", usage.input),
            ("output", usage.output),
            ("cache_read", usage.cache_read),
            ("cache_write", usage.cache_write),
            ("reasoning", usage.reasoning),
        ):
            if value:
                m.child(m.tokens, client, model, provider, kind).inc(value)
        if spent:
            m.child(m.cost, client, model, provider).inc(spent)
        m.child(m.duration, model, provider).observe(duration)
        if record.ttft is not None:
            m.child(m.ttft, model, provider).observe(record.ttft)
        for attempt in record.attempts:
            label, _, outcome = attempt.partition(":")
            name = label.rpartition("#")[0]
            m.child(m.attempts, m.provider(name), m.key(label), outcome).inc()


class _Settle:
    """:meth:`Accounting.settler` (an object, not a ``partial``: every open stream holds one)."""

    __slots__ = ("_accounting", "_record")

    def __init__(self, accounting: Accounting, record: Record) -> None:
        self._accounting = accounting
        self._record = record

    async def __call__(self) -> None:
        await self._accounting.settle(self._record)


class _Tracking:
    """:meth:`Accounting.request`: finished as one of the request's resources, not a context manager
    of its own (which was one more shielded cancel scope a request)."""

    __slots__ = ("_accounting", "_counted", "_rid", "_send", "_token", "record")

    def __init__(self, accounting: Accounting, scope: HTTPScope, send: ASGISendCallable) -> None:
        self._accounting = accounting
        self._send = send
        self.record = Record(
            request_id=_request_id(scope),
            method=scope["method"],
            path=scope["path"],
            at=time.time(),
            started=trio.current_time(),
        )
        self._rid = self.record.request_id.encode()
        # An open dashboard's live stream lasts as long as the page: not a request in progress.
        self._counted = accounting.config.server.metrics and scope["path"] not in UNCOUNTED
        self._token = _current.set(self.record)
        if accounting.tracing is not None:
            self.record.trace = accounting.tracing.begin(scope, self.record.at)
        if self._counted:
            accounting.metrics.in_flight.inc()

    async def tracked(self, message: ASGISendEvent) -> None:
        record = self.record
        if message["type"] == "http.response.start":
            record.status = message["status"]
            headers = message.get("headers")
            if not isinstance(headers, list):  # quart's is a list of its own: extended in place
                headers = list(headers or ())
                message = {**message, "headers": headers}
            headers.append((b"x-request-id", self._rid))
            headers.extend((k.encode(), v.encode()) for k, v in record.headers.items())
            await self._send(message)
            # Sent. hypercorn keeps the start message as long as the response lasts (it reads its
            # status for every piece of body), headers included: a stream held ~1 KB of them.
            headers.clear()
            record.headers.clear()
            return
        if message["type"] == "http.response.body":
            if record.capture is not None:
                record.capture.answered(message.get("body", b""))
            if record.ttft is None and message.get("body"):
                record.ttft = trio.current_time() - record.started
            if not message.get("more_body", False):
                record.completed = True
        await self._send(message)

    async def __call__(self) -> None:
        _current.reset(self._token)
        if self._counted:
            self._accounting.metrics.in_flight.dec()
        await self._accounting._finish(self.record)


def _one_worker_limiter(config: Config) -> Limiter:
    """The limiter of a gateway with one worker: in its memory, written behind to the machine's
    SQLite file unless ``scope = "process"``."""
    if config.state.scope == "process":
        from proxycast.state.memory import MemoryLimiter

        return MemoryLimiter()
    return LocalLimiter(data_dir() / "limits.db")


def _local_limiter(config: Config) -> Limiter:
    """The limiter of one instance whose workers share it (Redis's fallback): in the worker's
    memory, or the machine's SQLite file."""
    if config.state.scope == "process":
        from proxycast.state.memory import MemoryLimiter

        return MemoryLimiter()
    from proxycast.state.sqlite import SQLiteLimiter

    return SQLiteLimiter(data_dir() / "limits.db")


def _usage_of(record: Record) -> internal.Usage | None:
    """What the request used: as its upstream reported it, or, when an upstream answered without
    reporting any (a local server's stream, a stream cut short), an estimate, never zero: the
    request's input (:attr:`Record.prompt_estimate`) and what the translator counted of the output;
    marked ``estimated``."""
    usage = record.usage
    if usage is None and record.source is not None:
        usage = record.source.usage
    if not record.provider:  # no upstream answered
        return usage
    if usage is None or not (
        usage.input or usage.output or usage.cache_read or usage.cache_write or usage.estimated
    ):  # nothing reported (the fields compared one by one: attrs' __eq__ costs more, every request)
        return internal.Usage(input=record.prompt_estimate, estimated=True)
    if usage.estimated and not usage.input:
        return attrs.evolve(usage, input=record.prompt_estimate)
    return usage


MOST_TOKENS = 1 << 53
"""Tokens counted for one request at most: an upstream's absurd usage must not overflow a
limiter's store (SQLite's integers end at 2**63)."""


def _total(usage: internal.Usage) -> int:
    return min(MOST_TOKENS, usage.input + usage.cache_read + usage.cache_write + usage.output)


def _refusal(refused: Refused, headers: dict[str, str]) -> RateLimitedError:
    wait = max(1, math.ceil(refused.retry_after))
    headers = {**headers, "retry-after": str(wait)}
    if refused.what in ("usd_per_day", "usd_per_month"):
        period = "daily" if refused.what == "usd_per_day" else "monthly"
        return RateLimitedError(
            f"This client has spent its {period} budget of ${refused.limit:g} "
            f"(max_{refused.what}); it renews in {wait} s.",
            code="insufficient_quota",
            headers=headers,
        )
    unit = "requests" if refused.what == "requests" else "tokens"
    return RateLimitedError(
        f"Rate limit reached: this client may use {refused.limit:g} {unit} per minute "
        f"({'rpm' if unit == 'requests' else 'tpm'}); retry in {wait} s.",
        code="rate_limit_exceeded",
        headers=headers,
    )
