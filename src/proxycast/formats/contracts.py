"""The two contracts a wire format fulfils, and the values that pass between a format and the exchange.

An **upstream format** turns the internal conversation into a request its providers accept and their
answers (a JSON body, or a stream of bytes in its own framing) back into the internal model. An
**inbound dialect** reads a client's request into the internal conversation and writes internal
replies, stream events and errors the way its clients expect; when the upstream speaks the same format,
it forwards the client's bytes instead (the passthrough). The exchange (``proxycast.core.exchange``) knows
only these two Protocols; ``docs/architecture.md`` says how to add either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

import attrs

from proxycast.errors import ProxycastError

if TYPE_CHECKING:
    import httpx

    from proxycast.config import ProviderConfig
    from proxycast.errors import ErrorInfo
    from proxycast.formats import internal
    from proxycast.formats.quota import Quota

Operation = Literal["generate", "count_tokens"]
"""What an inbound request asks of a model: its answer, or the count of a prompt's tokens."""

RouteOperation = Literal[
    "generate",
    "count_tokens",
    "embed",
    "list_models",
    "get_model",
    "create_response",
    "get_response",
    "delete_response",
    "list_input_items",
    "cancel_response",
    "compact_response",
    "response_socket",
]
"""What a route does: the router answers each with the handler of this name (``proxycast.api``)."""


@attrs.frozen(kw_only=True)
class UpstreamRequest:
    """A request for one upstream, ready to send: where, what, and how to read its answer back."""

    path: str
    """Appended to the provider's base URL (``/chat/completions``, ``/v1beta/models/m:generateContent``)."""
    body: Mapping[str, Any] = attrs.field(factory=dict)
    """The JSON body of a converted request (serialised when sent)."""
    raw: bytes | tuple[bytes | memoryview, ...] | None = attrs.field(default=None, repr=False)
    """The body of a forwarded request, sent as it is (then :attr:`body` is empty): its bytes, or
    pieces sent one after the other (slices of the client's body around an edit, not a copy)."""
    stream: bool = False
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """Headers for this request besides the format's own and the credentials."""
    tool_names: Mapping[str, str] = attrs.field(factory=dict)
    """Tool names as sent upstream -> as the client declared them, where the format had to change
    them (the inverse the reply conversion applies)."""


@attrs.frozen
class TokenCount:
    """A request that counts a conversation's input tokens, and how to read the count it answers."""

    request: UpstreamRequest
    read: Callable[[dict[str, Any]], int]


@attrs.frozen
class Estimate:
    """A token count made locally, for an upstream that has no way to count (and said to be one)."""

    input_tokens: int


@attrs.frozen
class ModelsPage:
    """One page of an upstream's models endpoint: the model ids, and the query of the next page."""

    ids: tuple[str, ...]
    next_query: str | None = None
    """Appended (after ``&`` or ``?``) to :meth:`UpstreamFormat.models_url` for the next page;
    None: the last page."""
    next_url: str | None = None
    """The next page's URL relative to this page's (a second listing on another path: Bedrock's
    inference profiles after its foundation models); it wins over :attr:`next_query`."""


@attrs.frozen(kw_only=True)
class EnvDefaults:
    """How environment-only mode (no configuration file) adds a provider of this format."""

    key_variables: tuple[str, ...]
    """The first of these that is set is the provider's key."""
    chain_variables: tuple[str, ...] = ()
    """Without a key: variables that, all set, let the format find its credentials itself (a
    credential chain: ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``); the provider is added
    with no key of its own. Neither a key nor these: no provider."""
    base_url_variable: str
    models: tuple[str, ...]
    """The model globs the provider serves."""


class Headers(Protocol):
    """A request's headers, looked up by name in any case."""

    def get(self, key: str, /) -> str | None: ...


class StreamDecoder(Protocol):
    """An upstream's streamed body -> stream events. It owns the framing: bytes in, as they arrive."""

    def feed(self, chunk: bytes) -> list[internal.StreamEvent]: ...

    def end(self) -> list[internal.StreamEvent]:
        """The body ended: the events that closes (for a format without an end marker)."""
        ...


class EventSizes(Protocol):
    """The size limit of a stream's events, in the upstream's framing (an SSE event ends at a blank
    line, an AWS event-stream frame says its length)."""

    def fits(self, chunk: bytes) -> bool:
        """Account for ``chunk``; False once the event being received is larger than the limit."""
        ...


class StreamEncoder(Protocol):
    """Stream events -> the client's frames."""

    finished: bool
    """True once the client has a complete stream (or an error) and nothing may follow."""

    def encode(self, event: internal.StreamEvent) -> bytes: ...

    def fail(self, error: Exception) -> bytes:
        """An error frame in the client's dialect; nothing follows it."""
        ...


class Translator(Protocol):
    """Upstream body bytes -> client frames, pure and synchronous: a passthrough, or a decoder and an
    encoder composed (``relay.Converting``)."""

    content_type: str
    """The client's stream's media type (``text/event-stream``, or another framing's)."""

    def feed(self, chunk: bytes) -> bytes: ...

    def end(self) -> bytes:
        """The upstream body ended: the closing frames, or an error frame if it ended too soon."""
        ...

    def fail(self, error: ProxycastError) -> bytes:
        """The upstream failed mid-stream: an error frame in the client's dialect."""
        ...

    @property
    def finished(self) -> bool:
        """True once the client has been sent a complete stream (or an error) and nothing may follow."""
        ...

    @property
    def started(self) -> bool:
        """True once the upstream sent more than its opening events (role chunk, ``message_start``,
        ``ping``): content, a tool call or the finish. Until then the answer may still be retried."""
        ...

    @property
    def error(self) -> ProxycastError | None:
        """The upstream's error, when it reported one (or its stream was cut off)."""
        ...

    @property
    def usage(self) -> internal.Usage | None:
        """The usage the stream reported so far (None: none yet), for the accounting."""
        ...


class UpstreamFormat(Protocol):
    """What proxycast needs to know to use an upstream of one format (a provider ``type``)."""

    @property
    def type(self) -> str:
        """The provider ``type`` in the configuration."""
        ...

    @property
    def default_base_url(self) -> str:
        """The base URL of a provider that sets none, as the docs show it (a cloud's names its
        region or location: :meth:`base_url` fills it in)."""
        ...

    @property
    def env(self) -> EnvDefaults: ...

    @property
    def settings(self) -> frozenset[str]:
        """The provider keys this type reads besides the common ones (a cloud's ``region``,
        ``project``, ``deployments``...); setting another type's is a configuration error."""
        ...

    def base_url(self, provider: ProviderConfig) -> str:
        """The root every request of ``provider`` goes to, without a trailing slash: its
        ``base_url``, else the default (see :func:`configured_url`)."""
        ...

    def problems(self, provider: ProviderConfig) -> Sequence[str]:
        """What keeps ``provider`` from working that the configuration can say before a request
        (a missing region, project or credential, named with the setting or variable that
        supplies it); empty when nothing does."""
        ...

    def bind(self, provider: ProviderConfig) -> UpstreamFormat:
        """This format for one provider: the exchange talks to ``provider`` through what this
        returns, so a format whose requests depend on the provider's settings (a deployment in the
        path, a project in the URL) reads them once here. A format without settings returns itself."""
        ...

    @property
    def speaks(self) -> str:
        """The format whose requests its providers take as written: its own ``type``, or the one a
        cloud carries (``azure`` speaks ``openai``). A client of that format is forwarded to it."""
        ...

    def placed(self, request: UpstreamRequest) -> UpstreamRequest:
        """Where a request written for the format it :attr:`speaks` goes on this provider (a path
        relative to that format's base URL, the model in its body: Azure moves both to its
        deployment's URL); every request passes here before it is sent. The others return it as
        it is."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Headers every request carries (an API version, say)."""
        ...

    def owner(self, provider: str, url: str) -> str:
        """Who makes this provider's models (OpenAI's ``owned_by``), given its name and base URL."""
        ...

    def credentials(self, provider: ProviderConfig) -> Sequence[httpx.Auth]:
        """The provider's credential pool: one ``httpx.Auth`` per credential, rotated and rested
        like keys (a key in a header, a request signature, a token refreshed before it expires;
        several values of one credential live inside its ``Auth``). Empty: requests go without
        credentials (a local server)."""
        ...

    def request_from_internal(
        self, conversation: internal.Conversation, model: str
    ) -> UpstreamRequest:
        """The request for ``model``; raises ``InvalidRequestError`` for what the format cannot carry."""
        ...

    def searches(self, conversation: internal.Conversation) -> bool:
        """Whether the request for ``conversation`` has the upstream run its own web search
        (``params.web_search``): False when it has none, or leaves an offered one out."""
        ...

    def reply_to_internal(
        self, body: dict[str, Any], request: UpstreamRequest
    ) -> list[internal.Reply]:
        """A non-streamed answer (one reply per choice or candidate)."""
        ...

    def stream_decoder(self, request: UpstreamRequest) -> StreamDecoder: ...

    def event_sizes(self, limit: int) -> EventSizes:
        """Holds its streams' events to ``limit`` bytes (``server.max_event_bytes``), in its framing."""
        ...

    def count_tokens(
        self, conversation: internal.Conversation, model: str
    ) -> TokenCount | Estimate:
        """How to count the conversation's input tokens: ask the upstream, or estimate here."""
        ...

    def error_info(self, status: int, headers: Mapping[str, str], body: Any) -> ErrorInfo | None:
        """What an error answer says (its status, its headers, its body parsed as JSON); None when
        it is not in this format's shape."""
        ...

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        """What the provider's rate-limit headers say is left of the key an answer came for (read
        from every answer, success or error); None when they say nothing (a format without
        such headers, a local server)."""
        ...

    def models_url(self, provider: ProviderConfig) -> str:
        """The provider's models endpoint (GET, any URL: another host for a cloud's control plane),
        with its page-size query."""
        ...

    def models_page(self, body: Any) -> ModelsPage | None:
        """A page of the models endpoint's answer; None when it is not in this format's shape."""
        ...


_Format = TypeVar("_Format", bound="Unconfigured")


def configured_url(provider: ProviderConfig, default: str) -> str:
    """``provider``'s ``base_url``, else ``default``, without a trailing slash."""
    return (provider.base_url or default).rstrip("/")


class OwnRequests:
    """The part of :class:`UpstreamFormat` of a format whose requests are written for it: it speaks
    its own format, and a request goes where its path says."""

    type: str

    @property
    def speaks(self) -> str:
        return self.type

    def placed(self, request: UpstreamRequest) -> UpstreamRequest:
        return request


class Unconfigured(OwnRequests):
    """The part of :class:`UpstreamFormat` of a format with no settings of its own: one default
    URL, nothing to check before a request, the same format for every provider, speaking its own
    format."""

    default_base_url: str
    settings: frozenset[str] = frozenset()

    def base_url(self, provider: ProviderConfig) -> str:
        return configured_url(provider, self.default_base_url)

    def problems(self, provider: ProviderConfig) -> Sequence[str]:
        return ()

    def bind(self: _Format, provider: ProviderConfig) -> _Format:
        return self

    def quota(self, headers: Mapping[str, str]) -> Quota | None:
        return None


@attrs.frozen(kw_only=True)
class InboundRoute:
    """A route a dialect serves."""

    path: str
    """The path pattern: ``{name}`` is a parameter (one segment), ``{name:path}`` takes the rest of
    the path (``/v1/models/{model:path}``, ``/v1beta/models/{model}:generateContent``)."""
    operation: RouteOperation
    method: str = "POST"
    """``GET``, ``POST``, ``DELETE``..., or ``WEBSOCKET`` for a WebSocket route."""
    stream: bool | None = None
    """Whether the answer streams, when the route says so (Gemini's ``:streamGenerateContent``);
    None: the request's own ``stream`` field says."""

    @property
    def asks(self) -> Operation:
        """What a request to this route asks of a model."""
        return "count_tokens" if self.operation == "count_tokens" else "generate"


@attrs.frozen(kw_only=True)
class InboundRequest:
    """A client's request, read and validated by its dialect."""

    client_model: str
    """The model name the client asked for (and sees in every answer)."""
    stream: bool
    operation: Operation
    _parsed: Any = attrs.field(alias="parsed")
    """:attr:`parsed`, or :data:`LET_GO` (then :attr:`reread` gives it again)."""
    problem: ProxycastError | None = None
    """Why the request cannot be converted (the dialect's full validation), raised only if it is:
    a request forwarded to an upstream of its own format is checked only for what the gateway needs
    (``formats.envelope``)."""
    text: str = attrs.field(repr=False)
    """The body as the client wrote it (forwarded as it is to an upstream of the same format)."""
    spans: Mapping[str, tuple[int, int]] = attrs.field(repr=False)
    """Where each top-level value sits in :attr:`text`."""
    headers: Mapping[str, str] = attrs.field(factory=dict)
    """The client's headers that an upstream of the same format gets too."""
    raw: bytes = attrs.field(default=b"", repr=False)
    """The body's bytes as received, when the request holds them instead of :attr:`text` (a large
    body, held once: ``proxycast.http.body.held_once``): :attr:`text` is then empty and
    :attr:`spans` are byte offsets into these."""
    reread: Callable[[], Any] | None = attrs.field(default=None, repr=False, eq=False)
    """Reads :attr:`raw` again into :attr:`parsed`, which a large body held once does not keep
    (its strings would double it): a converted request reads it again when converted."""

    @property
    def parsed(self) -> Any:
        """The dialect's own request object (None when it failed the dialect's validation)."""
        parsed = self._parsed
        if parsed is LET_GO:
            assert self.reread is not None
            parsed = self.reread()
            object.__setattr__(self, "_parsed", parsed)  # converted once: kept from then on
        return parsed

    @property
    def parsed_kept(self) -> bool:
        """Whether :attr:`parsed` is at hand (not let go with a large body's text)."""
        return self._parsed is not LET_GO


LET_GO: Any = object()
"""What :attr:`InboundRequest.parsed` holds for a large body held once (``http.body.held_once``)."""


class InboundDialect(Protocol):
    """An API that clients speak to proxycast."""

    @property
    def name(self) -> str: ...

    @property
    def native_type(self) -> str:
        """The upstream format spoken the same way: requests to it are forwarded, not converted."""
        ...

    @property
    def routes(self) -> tuple[InboundRoute, ...]: ...

    def forwards_to(self, provider: ProviderConfig, request: InboundRequest) -> bool:
        """Whether ``request`` goes to ``provider`` as the client wrote it (:meth:`forward`): the
        provider speaks :attr:`native_type`, and what the request needs it can serve."""
        ...

    def owns(self, path: str) -> bool:
        """Whether errors on ``path`` (one no route matches) are this dialect's to render."""
        ...

    def credential(self, headers: Headers, query: Mapping[str, str]) -> str | None:
        """The client key the request presents, where this dialect's clients put it
        (``Authorization: Bearer``, ``x-api-key``; Google's clients: ``x-goog-api-key``, ``?key=``)."""
        ...

    def read(
        self,
        text: str,
        body: dict[str, Any],
        spans: Mapping[str, tuple[int, int]],
        headers: Headers,
        route: InboundRoute,
        params: Mapping[str, str],
        query: Mapping[str, str],
    ) -> InboundRequest:
        """Validate a parsed body, sent to ``route`` with the path's ``params`` (where a dialect
        whose model is in the path finds it) and the ``query``; raises ``InvalidRequestError``
        naming every field at fault."""
        ...

    def request_to_internal(self, request: InboundRequest) -> internal.Conversation: ...

    def forward(self, request: InboundRequest, upstream_model: str) -> UpstreamRequest:
        """The client's own bytes for an upstream of :attr:`native_type`, the model renamed."""
        ...

    def forwarded_reply(
        self, data: bytes, client_model: str, provider: str
    ) -> tuple[bytes, internal.Usage]:
        """A forwarded non-streamed answer, with the client's model name (502 when it is not a JSON
        object), and the usage it reports (for the accounting)."""
        ...

    def forwarded_stream(
        self, request: InboundRequest, provider: str, redact: Callable[[str], str]
    ) -> Translator:
        """A forwarded stream of :meth:`forward`'s request, relayed event by event with the client's
        model name; ``redact`` cleans the upstream's error events (which may echo the request's
        credentials). Its translator reads the stream's usage (for the accounting) and hides what
        :meth:`forward` asked for that the client did not."""
        ...

    def reply_from_internal(
        self,
        replies: list[internal.Reply],
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> dict[str, Any]:
        """The answer to ``conversation`` (the request as converted, and as the client sent it:
        what it asked of the answer's shape), in the client's shape."""
        ...

    def stream_encoder(
        self,
        client_model: str,
        conversation: internal.Conversation,
        request: InboundRequest | None = None,
    ) -> StreamEncoder: ...

    def tokens_counted(self, count: int) -> dict[str, Any]:
        """The answer to a token-counting route."""
        ...

    def dropped_tools(
        self, request: InboundRequest, searches: Callable[[], bool]
    ) -> tuple[str, ...]:
        """The built-in tools of ``request`` that a converted request left out (named to the client
        in ``x-proxycast-dropped-tools``): those no other upstream has, and an offered web search
        unless the upstream runs its own (``searches()``, asked only when there is one)."""
        ...

    def render_error(self, error: ProxycastError) -> tuple[int, bytes]:
        """The status and body of an error answer."""
        ...


@attrs.frozen
class ModelEntry:
    """A model the gateway lists: its client-facing name, and who makes it (``owned_by``)."""

    id: str
    owner: str


class ModelListing(Protocol):
    """A Models API (``GET /v1/models``, ``/v1/models/{id}``) in one API's shape."""

    def wants(self, headers: Headers, path: str) -> bool:
        """Whether this request to a models route asks for this shape: by its path (an API's own
        models route), or by its headers where several APIs share the path (``/v1/models``)."""
        ...

    def page(self, models: Sequence[ModelEntry], query: Mapping[str, str]) -> dict[str, Any]: ...

    def info(self, model: ModelEntry) -> dict[str, Any]: ...


def bearer_or_api_key(headers: Headers) -> str | None:
    """The key in ``x-api-key``, else in ``Authorization: Bearer`` (OpenAI's and Anthropic's SDKs);
    None when neither is there."""
    presented = headers.get("x-api-key")
    if presented is None:
        auth = headers.get("authorization")
        if auth is not None:
            scheme, _, credentials = auth.partition(" ")
            if scheme.lower() == "bearer":
                presented = credentials.strip()
    return presented
