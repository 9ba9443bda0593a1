"""Configuration: a TOML file (strict, with ``${VAR}`` interpolation) or the environment alone.

``docs/configuration.md`` describes the format. Unknown keys are errors, so that a typo is
reported instead of silently ignored.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
from cattrs.errors import BaseValidationError

from proxycast import formats
from proxycast.accounting.clients import UNNAMED, ClientConfig
from proxycast.accounting.prices import Price
from proxycast.core import routing as resolver
from proxycast.errors import ConfigError, ProxycastError
from proxycast.formats.converters import format_path, make_strict_converter, validation_errors
from proxycast.home import data_dir
from proxycast.ledger import LedgerConfig, ledger_path
from proxycast.state import StateConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_FILE = "proxycast.toml"


@attrs.frozen(kw_only=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9090
    api_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    """Keys that clients must present (``Authorization: Bearer`` or ``x-api-key``)."""
    workers: int = 1
    max_body_bytes: int = 32 * 1024 * 1024
    """Largest request body accepted; larger ones get 413."""
    connect_timeout: float = 10.0
    """Seconds to open a connection to an upstream (502 after)."""
    upstream_timeout: float = 600.0
    """Seconds an upstream may stay silent: before its headers, or between two pieces of body (504)."""
    shutdown_grace: float = 10.0
    """Seconds that in-flight requests get to finish on SIGINT/SIGTERM."""
    stalled_client_timeout: float = 30.0
    """Seconds a client may leave sent data unread before its connection is dropped (TCP_USER_TIMEOUT)."""
    keepalive_timeout: float = 5.0
    """Seconds an idle client connection is kept open (between requests, or before the first one)."""
    max_inflight_body_bytes: int = 256 * 1024 * 1024
    """Request body bytes held in memory across all requests of a worker; past it, 503."""
    max_event_bytes: int = 8 * 1024 * 1024
    """Largest upstream stream event (SSE); a larger one ends the stream with an error frame."""
    cors_origins: tuple[str, ...] = ()
    """Origins whose browser pages may call the gateway (CORS); ``"*"``: any. Default: none."""
    access_log: str = "text"
    """One line per request on stderr: ``text``, ``json`` or ``off``."""
    metrics: bool = True
    """``GET /metrics`` and the counting behind it (false: nothing counted, ``/metrics`` is a 404)."""
    max_memory_mb: float = 0
    """The overload manager's limit on each worker's resident memory (0: off): past 85% of it new
    streams are refused (503) and idle connections closed, past 95% every new model request
    (``proxycast.core.overload``)."""


@attrs.frozen(kw_only=True)
class ProviderConfig:
    name: str
    type: str
    """An upstream format of the registry (``proxycast.formats.UPSTREAMS``)."""
    base_url: str = ""
    api_keys: tuple[str, ...] = attrs.field(default=(), repr=False)
    models: tuple[str, ...] = ()
    responses: bool = False
    """The upstream serves the Responses API itself (``{base_url}/responses``, as OpenAI does):
    ``/v1/responses`` is forwarded to it as the client wrote it, instead of converted."""
    # the clouds' settings (docs/configuration.md); each type takes only those in its ``settings``
    api: str = ""
    """bedrock: ``"converse"`` (the default) or ``"invoke"`` (Anthropic models through InvokeModel)."""
    region: str = ""
    """bedrock: the AWS region (else ``AWS_REGION`` / ``AWS_DEFAULT_REGION``)."""
    profile: str = ""
    """bedrock: a named profile of the shared AWS files."""
    project: str = ""
    """vertex: the Google Cloud project (else the credentials' own / ``GOOGLE_CLOUD_PROJECT``)."""
    location: str = ""
    """vertex: the region (else ``GOOGLE_CLOUD_LOCATION``)."""
    credentials_file: str = ""
    """vertex: a service account's JSON key (else ``GOOGLE_APPLICATION_CREDENTIALS``, then the
    application default credentials)."""
    api_version: str = ""
    """azure: the ``api-version`` of deployment URLs, or ``"v1"`` for the v1 API."""
    deployments: Mapping[str, str] = attrs.field(factory=dict)
    """azure: client-facing model -> deployment name (default: the same name)."""

    @property
    def url(self) -> str:
        """The base URL without a trailing slash, the type's default when none is set (a cloud's
        from its region or location)."""
        return formats.UPSTREAMS[self.type].base_url(self)

    @property
    def speaks(self) -> str:
        """The format its requests are written in (``UpstreamFormat.speaks``): a client of that
        format is forwarded to it."""
        return formats.UPSTREAMS[self.type].speaks


@attrs.frozen(kw_only=True)
class RoutingConfig:
    """``[routing]``: what the gateway does when an upstream fails (``docs/resilience.md``)."""

    retries: int = 2
    """Further attempts (next healthy key, then next target) while the client has received nothing."""
    retry_on: tuple[int, ...] = (408, 429, 500, 502, 503, 504, 529)
    """Upstream statuses that are retried (connection failures and timeouts always are)."""
    cooldown: float = 30.0
    """Seconds a key sits out after a retried status (an upstream Retry-After wins, up to
    ``max_cooldown``), and a provider after a connection failure."""
    max_cooldown: float = 600.0
    """The longest cooldown; a key answered 401/403 sits out this long."""
    hedge_after: float = 0.0
    """Seconds after which an attempt that produced nothing gets a second one beside it (0: off)."""
    consecutive_fails: int = 3
    """A server error (5xx other than 529 or a 503 with ``Retry-After``) or a timeout rests a key only
    after this many in a row on it, a success resetting the count (one bad request must not bench a
    model for every client); 1: at the first, as 429, 529, 401/403 and connection failures do."""
    strategy: Strategy = "order"
    """Among the providers and keys that serve one model: ``order`` (each request starts at the
    next provider, keys in rotation), ``weighted``, ``least-busy`` or ``latency``. Keys that sit
    out are skipped whatever the strategy."""
    affinity: Affinity = "none"
    """``session``: the requests of one session keep to one provider and key while it is healthy
    (its prompt cache keeps hitting)."""
    weights: Mapping[str, float] = attrs.field(factory=dict)
    """``weighted``: the weight of a provider (by name) or of one key (``provider#N``); 1 if unset."""
    affinity_size: int = 10000
    """Sessions remembered for ``affinity = "session"`` (the least recently seen go first)."""
    models: Mapping[str, ModelRouting] = attrs.field(factory=dict)
    """Per client-facing model: its own ``strategy``, ``affinity``, ``weights``."""


Strategy = Literal["order", "weighted", "least-busy", "latency"]
"""How a request picks among the providers and keys that serve its model (``docs/routing.md``)."""

Affinity = Literal["none", "session"]


@attrs.frozen(kw_only=True)
class ModelRouting:
    """``[routing.models."NAME"]``: the selection settings of one client-facing model."""

    strategy: Strategy | None = None
    affinity: Affinity | None = None
    weights: Mapping[str, float] | None = None


@attrs.frozen(kw_only=True)
class RouteMatch:
    """A rule's ``match``: every key given must hold (none given: every request matches)."""

    inbound: str | None = None
    """The inbound API: ``openai``, ``anthropic``, ``responses``, ``gemini``."""
    model: str | None = None
    """The model the client asked for (a glob: ``claude-*haiku*``)."""
    client: str | None = None
    """The named client (``[[clients]]`` or a runtime key)."""
    header: Mapping[str, str] = attrs.field(factory=dict)
    """Request headers and the values they must have (names case-insensitive)."""
    thinking: bool | None = None
    """Thinking or reasoning asked for (Anthropic ``thinking``, ``reasoning_effort``, ...)."""
    images: bool | None = None
    """An image anywhere in the conversation."""
    documents: bool | None = None
    """A document (a PDF, say) anywhere in the conversation."""
    tools: bool | tuple[str, ...] | None = None
    """``true``: tools offered; a list: each of these offered (``web_search``: the upstream's own
    web search, however the client's API offers it)."""
    min_input_tokens: int | None = None
    """The estimated input tokens (a quarter of the body's characters) at least this."""
    stream: bool | None = None


@attrs.frozen(kw_only=True)
class RouteRule:
    """``[[routes]]``: requests that match go to ``target`` instead of the model they name."""

    name: str
    match: RouteMatch = RouteMatch()
    target: str
    """A model, alias or ``provider/model``; its own fallbacks apply."""


@attrs.frozen(kw_only=True)
class ResponsesConfig:
    """``[responses]``: the local store of Responses API answers (``previous_response_id``)."""

    store: bool = True
    """Keep responses (SQLite in the data directory); false keeps none."""
    store_days: float = 1.0
    """How long a stored response is kept."""
    store_max_mb: float = 100.0
    """The most the stored responses may take; past it the oldest go first."""
    websocket_idle_timeout: float = 300.0
    """WebSocket mode: seconds a connection may wait for its next ``response.create``."""
    websocket_max_seconds: float = 3600.0
    """WebSocket mode: the longest a connection lasts (OpenAI's: 60 minutes); a response in flight
    finishes first."""
    websocket_max_message_mb: float = 16.0
    """WebSocket mode: the largest client message (a ``response.create``)."""


@attrs.frozen(kw_only=True)
class TelemetryConfig:
    """``[telemetry]``: OpenTelemetry traces of model requests, exported over OTLP/HTTP
    (``proxycast[otel]``; ``proxycast.accounting.tracing``)."""

    otlp_endpoint: str = ""
    """The collector's OTLP/HTTP root (``http://127.0.0.1:4318``: spans go to its ``/v1/traces``);
    empty: no traces (and opentelemetry is never imported)."""
    service_name: str = "proxycast"
    """The ``service.name`` of the spans' resource."""
    sample: float = 1.0
    """The share of traces kept (0 to 1), unless the client's ``traceparent`` decided already."""


@attrs.frozen(kw_only=True)
class CaptureConfig:
    """``[capture]``: the bodies of model calls kept for inspection (``proxycast requests``, the
    dashboard's Requests page), in the ledger's database. Off by default."""

    enabled: bool = False
    sample: float = 1.0
    """The share of requests captured (0 to 1)."""
    errors: bool = True
    """Capture every request that failed (status 400 or more), sampled or not."""
    max_body_bytes: int = 262144
    """Each body kept (the request, the answer, each upstream request) is cut past this, marked."""
    retention_days: float = 7.0
    """Captures older than this are pruned (as the ledger's rows are)."""


@attrs.frozen(kw_only=True)
class Config:
    server: ServerConfig = ServerConfig()
    providers: tuple[ProviderConfig, ...] = ()
    responses: ResponsesConfig = ResponsesConfig()
    aliases: Mapping[str, str] = attrs.field(factory=dict)
    routes: tuple[RouteRule, ...] = ()
    """Rules by what a request is (``[[routes]]``): the first that matches picks the model."""
    routing: RoutingConfig = RoutingConfig()
    fallbacks: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    """Client-facing model (or ``*``) -> targets tried in order when its own providers fail."""
    # accounting: named clients, prices, the usage ledger, shared state
    clients: tuple[ClientConfig, ...] = ()
    prices: Mapping[str, Price] = attrs.field(factory=dict)
    ledger: LedgerConfig = attrs.field(factory=LedgerConfig)
    state: StateConfig = attrs.field(factory=StateConfig)
    telemetry: TelemetryConfig = TelemetryConfig()
    capture: CaptureConfig = CaptureConfig()
    source: str = "<memory>"
    """Where the configuration came from: a file path or ``environment``."""
    generated_key_file: Path | None = None
    """Set when the client key was generated and stored here (no key was configured)."""

    def provider(self, name: str) -> ProviderConfig | None:
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None


@attrs.frozen(kw_only=True)
class _FileConfig:
    """The shape of the TOML file (strict)."""

    server: ServerConfig = ServerConfig()
    providers: tuple[ProviderConfig, ...] = ()
    responses: ResponsesConfig = ResponsesConfig()
    aliases: dict[str, str] = attrs.field(factory=dict)
    routes: tuple[RouteRule, ...] = ()
    routing: RoutingConfig = RoutingConfig()
    fallbacks: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    clients: tuple[ClientConfig, ...] = ()
    prices: dict[str, Price] = attrs.field(factory=dict)
    ledger: LedgerConfig = attrs.field(factory=LedgerConfig)
    state: StateConfig = attrs.field(factory=StateConfig)
    telemetry: TelemetryConfig = TelemetryConfig()
    capture: CaptureConfig = CaptureConfig()


_converter = make_strict_converter(forbid_extra_keys=True)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(value: Any, path: tuple[str | int, ...], env: Mapping[str, str], src: str) -> Any:
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                raise ConfigError(
                    f"{src}: {format_path(path)}: environment variable {name} is not set"
                )
            return env[name]

        return _VAR.sub(replace, value)
    if isinstance(value, list):
        return [_interpolate(v, (*path, i), env, src) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _interpolate(v, (*path, k), env, src) for k, v in value.items()}
    return value


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    generate_key: bool = True,
) -> Config:
    """Load and validate a configuration.

    Args:
        path: a TOML file. When None: ``./proxycast.toml`` if it exists, else the environment alone.
        env: the environment to read (``os.environ`` by default).
        generate_key: when no client key is configured, create one (once, in the data directory)
            and use it. ``proxycast check`` passes False.

    Raises:
        ConfigError: naming the file, the key and the problem.
    """
    env = os.environ if env is None else env
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = DEFAULT_CONFIG_FILE
    if path is None:
        config = _from_environment(env)
    else:
        config = _from_file(Path(path), env)
    check_config(config)
    if not config.server.api_keys and not config.clients and generate_key:
        key_file = data_dir(env) / "client-key"
        key = _load_or_create_key(key_file)
        config = attrs.evolve(
            config,
            server=attrs.evolve(config.server, api_keys=(key,)),
            generated_key_file=key_file,
        )
    return config


def _from_file(path: Path, env: Mapping[str, str]) -> Config:
    src = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{src}: cannot read the file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{src}: not valid TOML: {exc}") from None
    raw = _interpolate(raw, (), env, src)
    try:
        parsed = _converter.structure(raw, _FileConfig)
    except BaseValidationError as exc:
        problems = [
            f"{src}: {format_path(p) or '(top level)'}: {msg}" for p, msg in validation_errors(exc)
        ]
        raise ConfigError("\n".join(problems)) from None
    return Config(
        server=parsed.server,
        providers=parsed.providers,
        responses=parsed.responses,
        aliases=parsed.aliases,
        routes=parsed.routes,
        routing=parsed.routing,
        fallbacks=parsed.fallbacks,
        clients=parsed.clients,
        prices=parsed.prices,
        ledger=parsed.ledger,
        state=parsed.state,
        telemetry=parsed.telemetry,
        capture=parsed.capture,
        source=src,
    )


def _from_environment(env: Mapping[str, str]) -> Config:
    providers = []
    for type_, upstream in formats.UPSTREAMS.items():
        defaults = upstream.env
        key = next((env[v] for v in defaults.key_variables if env.get(v)), None)
        chained = bool(defaults.chain_variables) and all(
            env.get(v) for v in defaults.chain_variables
        )
        if key is None and not chained:
            continue
        providers.append(
            ProviderConfig(
                name=type_,
                type=type_,
                base_url=env.get(defaults.base_url_variable, ""),
                api_keys=() if key is None else (key,),
                models=defaults.models,
            )
        )
    server = ServerConfig()
    if env.get("PROXYCAST_API_KEY"):
        server = attrs.evolve(server, api_keys=(env["PROXYCAST_API_KEY"],))
    return Config(server=server, providers=tuple(providers), source="environment")


_CLOUD_SETTINGS = frozenset(
    (
        "api",
        "region",
        "profile",
        "project",
        "location",
        "credentials_file",
        "api_version",
        "deployments",
    )
)
"""The provider keys that only some types take (``UpstreamFormat.settings``)."""


def check_config(config: Config) -> None:
    """Raise :class:`ConfigError` for values that parse but cannot work."""
    src = config.source
    seen: set[str] = set()
    server = config.server
    if not 0 <= server.port <= 65535:
        raise ConfigError(f"{src}: server.port: must be between 0 and 65535")
    if server.workers < 1:
        raise ConfigError(f"{src}: server.workers: must be at least 1")
    for field in ("max_body_bytes", "max_inflight_body_bytes", "max_event_bytes"):
        if getattr(server, field) < 1:
            raise ConfigError(f"{src}: server.{field}: must be positive")
    if server.max_memory_mb < 0:
        raise ConfigError(f"{src}: server.max_memory_mb: must be 0 (off) or positive")
    for field in (
        "connect_timeout",
        "upstream_timeout",
        "shutdown_grace",
        "stalled_client_timeout",
        "keepalive_timeout",
    ):
        if getattr(server, field) <= 0:
            raise ConfigError(f"{src}: server.{field}: must be positive")
    for index, key in enumerate(server.api_keys):
        if not key.strip():
            raise ConfigError(f"{src}: server.api_keys[{index}]: is empty")
    for index, provider in enumerate(config.providers):
        where = f"{src}: providers[{index}]"
        if provider.type not in formats.UPSTREAMS:
            expected = ", ".join(repr(t) for t in formats.UPSTREAMS)
            raise ConfigError(f"{where}.type: expected one of {expected}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", provider.name):
            raise ConfigError(
                f"{where}.name: {provider.name!r} may hold only letters, digits, '_', '.' and '-'"
            )
        if provider.name in seen:
            raise ConfigError(f"{where}.name: {provider.name!r} is used by another provider")
        seen.add(provider.name)
        upstream = formats.UPSTREAMS[provider.type]
        for setting in sorted(_CLOUD_SETTINGS - upstream.settings):
            if getattr(provider, setting):
                takers = [t for t, u in formats.UPSTREAMS.items() if setting in u.settings]
                only = " or ".join(repr(t) for t in takers)
                raise ConfigError(
                    f"{where}.{setting}: not a setting of type {provider.type!r}"
                    + (f" (only of {only})" if only else "")
                )
        for problem in upstream.problems(provider):
            raise ConfigError(f"{where} ({provider.name}): {problem}")
        if not provider.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.base_url: must start with http:// or https://")
    for field in (
        "store_days",
        "store_max_mb",
        "websocket_idle_timeout",
        "websocket_max_seconds",
        "websocket_max_message_mb",
    ):
        if getattr(config.responses, field) <= 0:
            raise ConfigError(f"{src}: responses.{field}: must be positive")
    for alias, target in config.aliases.items():
        if target in config.aliases:
            raise ConfigError(
                f"{src}: aliases.{alias}: points at another alias ({target!r}); "
                "point it at a model instead"
            )
    routing = config.routing
    if routing.retries < 0:
        raise ConfigError(f"{src}: routing.retries: must be 0 or more")
    if routing.consecutive_fails < 1:
        raise ConfigError(f"{src}: routing.consecutive_fails: must be 1 or more")
    for field in ("cooldown", "max_cooldown", "hedge_after"):
        if getattr(routing, field) < 0:
            raise ConfigError(f"{src}: routing.{field}: must be 0 or more")
    if routing.cooldown > routing.max_cooldown:
        raise ConfigError(f"{src}: routing.cooldown: must not exceed routing.max_cooldown")
    for index, status in enumerate(routing.retry_on):
        if not 400 <= status <= 599:
            raise ConfigError(f"{src}: routing.retry_on[{index}]: {status} is not an error status")
    for model, targets in config.fallbacks.items():
        if not targets:
            raise ConfigError(f"{src}: fallbacks.{model}: lists no target")
    _check_routes(config)
    _check_accounting(config)
    _check_telemetry(config)


def _check_routes(config: Config) -> None:
    """``[[routes]]`` and the selection settings of ``[routing]``."""
    src = config.source
    routing = config.routing
    if routing.affinity_size < 1:
        raise ConfigError(f"{src}: routing.affinity_size: must be at least 1")
    weighted = [("routing.weights", routing.weights)] + [
        (f"routing.models.{model}.weights", settings.weights or {})
        for model, settings in routing.models.items()
    ]
    for where, weights in weighted:
        for unit, weight in weights.items():
            name = unit.partition("#")[0]
            if config.provider(name) is None:
                raise ConfigError(f"{src}: {where}.{unit}: no provider is named {name!r}")
            if weight < 0:
                raise ConfigError(f"{src}: {where}.{unit}: must be 0 or more")
    names: set[str] = set()
    dialects = {d.name for d in formats.DIALECTS}
    for index, rule in enumerate(config.routes):
        where = f"{src}: routes[{index}]"
        if not rule.name or rule.name in names:
            raise ConfigError(f"{where}.name: {rule.name!r} is empty or used by another rule")
        names.add(rule.name)
        if rule.match.inbound is not None and rule.match.inbound not in dialects:
            expected = ", ".join(repr(d) for d in sorted(dialects))
            raise ConfigError(f"{where}.match.inbound: expected one of {expected}")
        try:
            resolver.resolve(rule.target, config)
        except ProxycastError as exc:
            raise ConfigError(
                f"{where}.target: {rule.target!r} routes nowhere ({exc.message})"
            ) from None


def _check_accounting(config: Config) -> None:
    """``[[clients]]``, ``[prices]``, ``[ledger]``, ``[state]`` and ``server.access_log``."""
    src = config.source
    if config.server.access_log not in ("text", "json", "off"):
        raise ConfigError(f"{src}: server.access_log: expected 'text', 'json' or 'off'")
    names: set[str] = set()
    for index, client in enumerate(config.clients):
        where = f"{src}: clients[{index}]"
        if not re.fullmatch(r"[A-Za-z0-9_.@-]+", client.name):
            raise ConfigError(
                f"{where}.name: {client.name!r} may hold only letters, digits, '_', '.', '@' and '-'"
            )
        if client.name == UNNAMED:
            raise ConfigError(
                f"{where}.name: {UNNAMED!r} is reserved: it names the unnamed keys "
                "([server].api_keys) in usage, logs and metrics; choose another name"
            )
        if client.name in names:
            raise ConfigError(f"{where}.name: {client.name!r} is used by another client")
        names.add(client.name)
        if bool(client.api_key.strip()) == bool(client.api_key_sha256):
            raise ConfigError(f"{where}: give exactly one of api_key and api_key_sha256")
        if client.api_key_sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", client.api_key_sha256):
            raise ConfigError(f"{where}.api_key_sha256: expected 64 hexadecimal digits")
        for field in ("rpm", "tpm", "max_usd_per_day", "max_usd_per_month"):
            value = getattr(client, field)
            if value is not None and value < 0:
                raise ConfigError(f"{where}.{field}: must be 0 or more")
    for model, price in config.prices.items():
        for field in ("input", "output", "cache_read", "cache_write"):
            value = getattr(price, field)
            if value is not None and value < 0:
                raise ConfigError(f"{src}: prices.{model}.{field}: must be 0 or more")
    try:
        ledger_path(config.ledger)
    except ValueError as exc:
        raise ConfigError(f"{src}: ledger.url: {exc}") from None
    if config.ledger.retention_days <= 0:
        raise ConfigError(f"{src}: ledger.retention_days: must be positive")
    if config.ledger.buffer_rows < 1:
        raise ConfigError(f"{src}: ledger.buffer_rows: must be 1 or more")
    capture = config.capture
    if not 0 <= capture.sample <= 1:
        raise ConfigError(f"{src}: capture.sample: expected a share from 0 to 1")
    if capture.max_body_bytes < 1:
        raise ConfigError(f"{src}: capture.max_body_bytes: must be 1 or more")
    if capture.retention_days <= 0:
        raise ConfigError(f"{src}: capture.retention_days: must be positive")
    if capture.enabled and config.ledger.url == "off":
        raise ConfigError(
            f"{src}: capture.enabled: captures are kept in the ledger's database, "
            "which is off (ledger.url = 'off')"
        )
    state = config.state
    if state.scope not in ("machine", "process"):
        raise ConfigError(f"{src}: state.scope: expected 'machine' or 'process'")
    if state.scope == "process" and config.server.workers > 1 and not state.redis_url:
        raise ConfigError(
            f"{src}: state.scope: 'process' counts limits in each worker's memory, so with "
            f"server.workers = {config.server.workers} each worker would allow the whole limit; "
            "use 'machine' (the default)"
        )
    if state.redis_url and not state.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{src}: state.redis_url: expected redis://HOST:PORT/DB, rediss://... or unix://PATH"
        )
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", state.redis_prefix):
        raise ConfigError(
            f"{src}: state.redis_prefix: may hold only letters, digits, '_', '.', ':' and '-'"
        )


def _check_telemetry(config: Config) -> None:
    """``[telemetry]``: a URL the exporter can post to, a sampling share, and the extra installed."""
    src, telemetry = config.source, config.telemetry
    if not 0 <= telemetry.sample <= 1:
        raise ConfigError(f"{src}: telemetry.sample: must be between 0 and 1")
    if not telemetry.service_name.strip():
        raise ConfigError(f"{src}: telemetry.service_name: is empty")
    if not telemetry.otlp_endpoint:
        return
    if not telemetry.otlp_endpoint.startswith(("http://", "https://")):
        raise ConfigError(
            f"{src}: telemetry.otlp_endpoint: expected the collector's OTLP/HTTP URL, "
            "http://HOST:4318 (or https://...)"
        )
    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
        raise ConfigError(
            f"{src}: telemetry.otlp_endpoint: traces need the OpenTelemetry SDK and its OTLP "
            "exporter: pip install 'proxycast[otel]'"
        )


def _load_or_create_key(key_file: Path) -> str:
    try:
        key = key_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    key = "pc-" + secrets.token_urlsafe(32)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(key + "\n")
    return key
