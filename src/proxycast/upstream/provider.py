"""All of proxycast's I/O towards upstreams: the worker's pooled client, a provider's key pool, sending
one request, and mapping transport failures and error statuses to proxycast errors."""

from __future__ import annotations

import contextvars
import hashlib
import json
import time
import zlib
from typing import TYPE_CHECKING, Any

import httpcore
import httpx
import trio

from proxycast.core.redact import without_userinfo
from proxycast.errors import (
    BodyTooLargeError,
    ErrorInfo,
    ProxycastError,
    ShuttingDownError,
    UpstreamConnectError,
    UpstreamCredentialsError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    upstream_error,
)
from proxycast.formats import sse
from proxycast.formats.auth import HeaderAuth
from proxycast.formats.json_spans import dumps_text
from proxycast.http import loopguard
from proxycast.upstream.draining import Draining, current_draining
from proxycast.upstream.hints import wrong_path_hint
from proxycast.upstream.keys import KeyPool

if TYPE_CHECKING:
    import contextlib
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping

    from proxycast.config import ProviderConfig, ServerConfig
    from proxycast.formats.contracts import EventSizes, UpstreamFormat, UpstreamRequest

_ERROR_BODY_LIMIT = 64 * 1024
_CLOSE_SECONDS = 5.0

TRACE_HEADERS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "proxycast_trace_headers", default=None
)
"""The W3C trace context (``traceparent``) of the attempt being made, sent with its upstream
request; set by ``proxycast.accounting.tracing`` only when traces are on."""


POOL_SHARDS = 256
"""Connection pools behind the worker's one client (see :class:`ShardedTransport`)."""


class _Counted(httpx.AsyncByteStream):
    """A response body that tells its shard when it is closed (the request is over then, not before)."""

    __slots__ = ("_in_flight", "_shard", "_stream")

    def __init__(self, stream: httpx.AsyncByteStream, in_flight: list[int], shard: int) -> None:
        self._stream = stream
        self._in_flight: list[int] | None = in_flight
        self._shard = shard

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if self._in_flight is not None:
            self._in_flight[self._shard] -= 1
            self._in_flight = None
        await self._stream.aclose()


MAX_DECODED_BYTES = 64 * 1024 * 1024
"""Largest upstream body accepted once decompressed (an upstream that compresses despite
``accept-encoding: identity``); past it the answer is a 502 (a stream: an error frame)."""


class _Pieces(httpx.AsyncByteStream):
    """A request body sent piece after piece, in slices of at most :data:`_PIECE` bytes (each is
    copied once on its way to the socket: a slice, not the whole body)."""

    def __init__(self, pieces: tuple[bytes | memoryview, ...]) -> None:
        self._pieces = pieces

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            view = memoryview(piece)
            for start in range(0, len(view), _PIECE):
                yield bytes(view[start : start + _PIECE])


_PIECE = 1024 * 1024


class _Decompressed(httpx.AsyncByteStream):
    """A gzip or deflate body decompressed here, at most ``limit`` bytes of it.

    httpx would decompress it in full, however large (1 MB of gzip on the wire is 1 GB in memory); the
    transport decodes it instead, bounded, and removes ``content-encoding`` so that httpx does not.
    """

    def __init__(self, stream: httpx.AsyncByteStream, encoding: str, limit: int) -> None:
        self._stream = stream
        wbits = zlib.MAX_WBITS | 32 if encoding != "deflate" else zlib.MAX_WBITS  # 32: gzip or zlib
        self._decoder = zlib.decompressobj(wbits)
        self._deflate = encoding == "deflate"
        self._left = limit
        self._limit = limit

    def _decode(self, data: bytes) -> bytes:
        try:
            out = self._decoder.decompress(data, self._left + 1)
        except zlib.error:
            if not self._deflate:
                raise httpx.DecodingError("invalid compressed body") from None
            # "deflate" is sometimes raw deflate without the zlib header
            self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
            self._deflate = False
            out = self._decoder.decompress(data, self._left + 1)
        self._deflate = False
        if len(out) > self._left or self._decoder.unconsumed_tail:
            raise BodyTooLargeError(
                f"a body larger than {self._limit} bytes once decompressed (content-encoding)"
            )
        self._left -= len(out)
        return out

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for data in self._stream:
            out = self._decode(data)
            if out:
                yield out
        tail = self._decoder.flush()
        if tail:
            if len(tail) > self._left:
                raise BodyTooLargeError(
                    f"a body larger than {self._limit} bytes once decompressed (content-encoding)"
                )
            yield tail

    async def aclose(self) -> None:
        await self._stream.aclose()


class ShardedTransport(httpx.AsyncBaseTransport):
    """Several connection pools behind one transport.

    httpcore's pool walks every connection it holds, polling each idle one's socket, twice per
    request: its cost grows with the number of connections, and with 32 to 256 concurrent requests it
    was the largest single cost of a proxied request (profiled with py-spy: docs/performance.md). Each
    request goes to the first pool with no request in flight (the least busy when all are), so a light
    load keeps reusing the first pools' keep-alive connections, and every walk stays short. The pools
    are created empty; one costs nothing until used.
    """

    def __init__(
        self, shards: int, *, max_decoded_bytes: int = MAX_DECODED_BYTES, **options: Any
    ) -> None:
        # one TLS context for all (building one loads the CA bundle: about 18 ms each)
        options.setdefault("verify", httpx.create_ssl_context())
        self._shards = [httpx.AsyncHTTPTransport(**options) for _ in range(shards)]
        self._in_flight = [0] * shards
        self._max_decoded = max_decoded_bytes

    async def close_expired(self) -> None:
        """Close the idle connections whose keep-alive expiry has passed.

        httpcore does this only when a pool is next used, so after a burst the connections of pools
        that are not used again stayed open indefinitely. This does what each request does first.
        """
        for shard in self._shards:
            pool = shard._pool
            if not isinstance(pool, httpcore.AsyncConnectionPool) or not pool.connections:
                continue
            with pool._optional_thread_lock:
                closing = pool._assign_requests_to_connections()
            await pool._close_connections(closing)

    def _pick(self) -> int:
        try:
            return self._in_flight.index(0)
        except ValueError:
            return self._in_flight.index(min(self._in_flight))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        index = self._pick()
        self._in_flight[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._in_flight[index] -= 1
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        stream: httpx.AsyncByteStream = response.stream
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            stream = _Decompressed(stream, encoding, self._max_decoded)
            del response.headers["content-encoding"]
        response.stream = _Counted(stream, self._in_flight, index)
        # The client is shared by every client of the gateway: an upstream's cookies (a CDN's, say) must
        # not be kept and sent along with other clients' requests. proxycast passes no upstream cookie on.
        if "set-cookie" in response.headers:
            del response.headers["set-cookie"]
        return response

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):  # every pool closes, even in a cancelled scope
            for shard in self._shards:
                await shard.aclose()


def make_client(server: ServerConfig) -> httpx.AsyncClient:
    """The one pooled client of a worker.

    The read timeout bounds silence (before the headers and between two pieces of body), never a
    stream's whole length; keep-alive connections are dropped before a typical upstream drops them.
    """
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=8, keepalive_expiry=4.0)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=server.connect_timeout,
            read=server.upstream_timeout,
            write=server.upstream_timeout,
            pool=server.upstream_timeout,
        ),
        transport=ShardedTransport(POOL_SHARDS, limits=limits, trust_env=False),
        follow_redirects=False,
        trust_env=False,
    )


class mapped_errors:  # noqa: N801 - used as a function: ``with mapped_errors(...)``
    """Turn httpx's transport errors into :class:`UpstreamError`s that name the provider.

    A class rather than a ``contextmanager``: a stream enters it once per piece of its body.
    """

    __slots__ = ("_provider", "_server")

    def __init__(self, provider: ProviderConfig, server: ServerConfig) -> None:
        self._provider = provider
        self._server = server

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is None or not isinstance(exc, (httpx.TransportError, httpx.DecodingError)):
            return
        provider, server = self._provider, self._server
        if isinstance(exc, httpx.TimeoutException):
            waited = (
                server.connect_timeout
                if isinstance(exc, httpx.ConnectTimeout)
                else server.upstream_timeout
            )
            raise UpstreamTimeoutError(
                f"Provider {provider.name!r} did not answer within {waited:g} s."
            ) from exc
        if isinstance(exc, httpx.ConnectError):
            raise UpstreamConnectError(
                f"Cannot connect to provider {provider.name!r} at {without_userinfo(provider.url)}."
            ) from exc
        if isinstance(exc, BodyTooLargeError):
            raise UpstreamUnavailableError(f"Provider {provider.name!r} sent {exc}.") from exc
        if isinstance(exc, httpx.DecodingError):
            raise UpstreamUnavailableError(
                f"Provider {provider.name!r} sent a body that cannot be decoded ({exc})."
            ) from exc
        raise UpstreamUnavailableError(
            f"Provider {provider.name!r} broke off the connection ({type(exc).__name__})."
        ) from exc


class Provider:
    """A configured provider at run time: its format, its key pool, and sending requests to it.

    Args:
        config: the provider's configuration.
        format: the upstream format of its ``type``.
        server: the server's configuration (timeouts).
        client: the worker's pooled client.
        clock: the key pool's clock (monotonic seconds).
    """

    def __init__(
        self,
        config: ProviderConfig,
        format: UpstreamFormat,
        server: ServerConfig,
        client: httpx.AsyncClient,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.format = format
        self.server = server
        self.client = client
        self.url = config.url
        credentials = list(format.credentials(config))
        self._auths: list[httpx.Auth | None] = [*credentials] or [None]
        # a credential is named by a digest of its key (shared state follows the key, not its place
        # in the list); one the format found itself (a credential chain) by its place
        named = config.api_keys if len(config.api_keys) == len(credentials) else ()
        self.pool = KeyPool(
            config.name,
            len(credentials),
            clock,
            fingerprints=tuple(hashlib.sha256(key.encode()).hexdigest()[:12] for key in named),
        )
        # What every request to this provider shares is built once (see :meth:`open`): its headers
        # per key (the client's defaults, ours, the format's, the key's, the hop mark), the
        # parsed URL per path, the timeouts, and the transport (mounts resolved once).
        base = httpx.Headers({"host": httpx.URL(self.url).netloc.decode("ascii")})
        base.update(client.headers)
        base.pop(
            "connection", None
        )  # httpx's keep-alive: HTTP/1.1's default (a header less to send)
        base.update({"content-type": "application/json", "accept-encoding": "identity"})
        base.update(format.headers)
        # kept as httpx.Headers: a request's copy shares their normalised entries (built from raw
        # pairs, each request normalised every header again, and an open stream held the copies)
        self._headers: list[httpx.Headers] = []
        self._flows: list[httpx.Auth | None] = []
        """Per key, an auth that is not one header (none today): httpx's auth flow runs it."""
        for auth in self._auths:
            headers = httpx.Headers(base)
            if isinstance(auth, HeaderAuth):
                headers[auth.header[0]] = auth.header[1]
            self._headers.append(headers)
            self._flows.append(None if auth is None or isinstance(auth, HeaderAuth) else auth)
        self._mark = client.headers.get(loopguard.HOP_HEADER)
        self._urls: dict[str, httpx.URL] = {}
        self._extensions = {"timeout": client.timeout.as_dict()}
        self._transport = client._transport_for_url(httpx.URL(self.url))

    def __repr__(self) -> str:
        return f"<Provider {self.config.name!r} ({self.config.type})>"

    @property
    def name(self) -> str:
        return self.config.name

    def errors(self) -> contextlib.AbstractContextManager[None]:
        """Transport failures while talking to this provider, as proxycast errors naming it."""
        return mapped_errors(self.config, self.server)

    async def open(self, request: UpstreamRequest, key: int = 0) -> httpx.Response:
        """Send ``request`` with the pool's key ``key`` and return the open response once its
        status is a success.

        The caller must ``aclose()`` the response. Raises :class:`UpstreamError` for a failure status
        (translated into a proxycast error) or a transport failure.
        """
        request = self.format.placed(request)
        body = request.raw
        if body is None:
            body = dumps_text(request.body).encode()
        stream: httpx.AsyncByteStream
        if isinstance(body, bytes):
            stream, length = httpx.ByteStream(body), len(body)
        else:  # pieces of the client's body: sent from where they are
            stream, length = _Pieces(body), sum(len(piece) for piece in body)
        url = self._urls.get(request.path)
        if url is None:
            if (
                len(self._urls) > 256
            ):  # paths come from the formats (one per upstream model at most)
                self._urls.clear()
            url = self._urls[request.path] = httpx.URL(self.url + request.path)
        # a stream, not content: httpx would add Host and Content-Length by normalising every
        # header again; the request's headers are a copy of the prepared ones, sharing their entries
        sent = httpx.Request(
            "POST",
            url,
            headers=self._headers[key],
            stream=stream,
            extensions=self._extensions,
        )
        headers = sent.headers
        headers["content-length"] = str(length)
        arrived = loopguard.arrived()
        if request.headers or arrived:
            headers.update(request.headers)
            if arrived and self._mark is not None:  # the marks it came with, then ours
                headers[loopguard.HOP_HEADER] = ", ".join([*arrived, self._mark])
        traced = TRACE_HEADERS.get()
        if traced is not None:  # the attempt's span (proxycast.accounting.tracing)
            headers.update(traced)
        with self.errors():
            response = await self._send(sent, key)
        quota = self.format.quota(response.headers)  # on every answer: a 429's too
        if quota is not None:
            self.pool.observe(key, quota)
        if response.status_code < 300:
            return response
        if response.status_code < 400:
            # Redirects are never followed: the key must not go to another host.
            await aclose_shielded(response)
            raise UpstreamUnavailableError(
                f"Provider {self.name!r} answered {response.status_code} (a redirect, to "
                f"{response.headers.get('location', 'nowhere')!r}); proxycast does not follow "
                "redirects: check the provider's base_url."
            )
        try:
            with self.errors():
                data = await _read_limited(response, _ERROR_BODY_LIMIT)
        finally:
            await aclose_shielded(response)  # noqa: ASYNC102 - shielded inside
        error = self.status_error(response.status_code, data, response.headers)
        if response.status_code == 404:  # say whose 404 it is, and where it was asked
            error.message = (
                f"Provider {self.name!r} answered 404 to POST {sent.url.path}: {error.message}"
                + wrong_path_hint(self.config, data)
            )
        raise error

    async def _send(self, sent: httpx.Request, key: int) -> httpx.Response:
        """The transport called directly: a relay needs none of the client's layers around it
        (cookies, redirects, event hooks, its per-request log line), and skipping them saved about
        0.1 ms a request (profiled; ``bench/reshape_ab.py``). A key that is not one header still
        goes through the client's auth flow."""
        flow = self._flows[key]
        if flow is not None:
            return await self.client.send(sent, stream=True, auth=flow)
        if self.client.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        response = await self._transport.handle_async_request(sent)
        response.request = sent
        return response

    def status_error(self, status: int, data: bytes, headers: httpx.Headers) -> ProxycastError:
        """The proxycast error for an upstream failure status."""
        if status in (401, 403):
            # The provider's credentials are proxycast's problem, not the client's; the upstream's
            # message may quote part of the key, so it is not passed on.
            return UpstreamCredentialsError(
                f"Provider {self.name!r} rejected proxycast's credentials "
                f"(upstream status {status}); check the provider's api_keys in the configuration."
            )
        info: ErrorInfo | None = None
        try:
            info = self.format.error_info(status, headers, json.loads(data))
        except ValueError:
            pass
        if info is None:
            text = data.decode("utf-8", "replace").strip()[:500] or "(empty body)"
            info = ErrorInfo(message=f"Provider {self.name!r} answered {status}: {text}")
        passed = {k: headers[k] for k in ("retry-after", "retry-after-ms") if k in headers}
        return upstream_error(self.config.type, info, status, passed)

    async def read_all(self, response: httpx.Response) -> bytes:
        """The whole body of an open response, which is closed after."""
        try:
            with self.errors():
                return await response.aread()
        finally:
            await aclose_shielded(response)  # noqa: ASYNC102 - shielded inside

    async def read_object(self, response: httpx.Response) -> dict[str, Any]:
        """The whole body of an open response as a JSON object (502 when it is not one)."""
        data = await self.read_all(response)
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise UpstreamUnavailableError(
                f"Provider {self.name!r} answered with a body that is not a JSON object."
            )
        return value

    def body(self, response: httpx.Response) -> AsyncGenerator[bytes, None]:
        """An open response's body, piece by piece as it arrives, transport failures mapped."""
        events = self.format.event_sizes(self.server.max_event_bytes)
        return iter_body(response, self.config, self.server, events)


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])


async def aclose_shielded(response: httpx.Response) -> None:
    """Close an upstream response even inside a cancelled scope (the connection must not leak)."""
    if response.is_closed:  # read to its end: closed already (a shielded scope a request saved)
        return
    with trio.move_on_after(_CLOSE_SECONDS, shield=True):
        await response.aclose()


async def iter_body(
    response: httpx.Response,
    provider: ProviderConfig,
    server: ServerConfig,
    events: EventSizes | None = None,
) -> AsyncGenerator[bytes, None]:
    """The response body piece by piece as it arrives, transport failures mapped.

    An event larger than ``server.max_event_bytes`` (``events``: the format's framing says where
    events end) ends it with an error (the relay turns it into an error frame), and so does the end
    of ``shutdown_grace`` when the gateway is shutting down.
    """
    # the transport's stream itself: httpx's aiter_bytes would add its decoder chain (generators,
    # buffers) to every open stream, for nothing when the transport decoded the body (gzip, deflate)
    # or it was not encoded; another encoding (br, zstd) goes through httpx's decoders
    if "content-encoding" in response.headers:
        iterator = response.aiter_bytes()
    else:
        iterator = response.stream.__aiter__()  # type: ignore[union-attr]
    if events is None:
        events = sse.EventSizes(server.max_event_bytes)
    draining = current_draining() or Draining()  # none: not served by serve_connections
    sock = _socket_of(response)
    if sock is not None:
        draining.watch(sock)  # woken at the shutdown deadline
    try:
        while True:
            if draining.expired:
                raise _outlived(server)
            with mapped_errors(provider, server):
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except httpx.TransportError:
                    if draining.expired:  # woken by the deadline: not the upstream's failure
                        raise _outlived(server) from None
                    raise
                if not events.fits(chunk):
                    raise BodyTooLargeError(
                        f"a stream event larger than {server.max_event_bytes} bytes "
                        "(server.max_event_bytes)"
                    )
            yield chunk
    finally:
        if sock is not None:
            draining.unwatch(sock)
        close = getattr(iterator, "aclose", None)
        if close is not None:
            with trio.move_on_after(_CLOSE_SECONDS, shield=True):
                await close()


def _socket_of(response: httpx.Response) -> Any:
    """The socket an upstream response arrives on (None when its transport does not say)."""
    stream = response.extensions.get("network_stream")
    try:
        return None if stream is None else stream.get_extra_info("socket")
    except (AssertionError, AttributeError):  # not a plain or TLS socket stream
        return None


def _outlived(server: ServerConfig) -> ShuttingDownError:
    return ShuttingDownError(
        "The gateway is shutting down: the stream outlived its shutdown grace "
        f"of {server.shutdown_grace:g} s."
    )
