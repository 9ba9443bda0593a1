"""What every provider adapter shares: the key pool, sending a request, and mapping failures."""

from __future__ import annotations

import contextlib
import itertools
import json
import zlib
from typing import TYPE_CHECKING, Any

import attrs
import httpcore
import httpx
import trio

from proxycast._connections import Draining, current_draining
from proxycast.errors import (
    ProxycastError,
    UpstreamError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    kind_for_status,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator

    from proxycast.config import ProviderConfig, ServerConfig

_ERROR_BODY_LIMIT = 64 * 1024
_CLOSE_SECONDS = 5.0


@attrs.frozen
class UpstreamErrorInfo:
    message: str
    type: str | None = None
    param: str | None = None
    code: str | None = None


POOL_SHARDS = 256
"""Connection pools behind the worker's one client (see :class:`ShardedTransport`)."""


class _Counted(httpx.AsyncByteStream):
    """A response body that tells its shard when it is closed (the request is over then, not before)."""

    def __init__(self, stream: httpx.AsyncByteStream, done: Callable[[], None]) -> None:
        self._stream = stream
        self._done: Callable[[], None] | None = done

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        if self._done is not None:
            self._done()
            self._done = None
        await self._stream.aclose()


MAX_DECODED_BYTES = 64 * 1024 * 1024
"""Largest upstream body accepted once decompressed (an upstream that compresses despite
``accept-encoding: identity``); past it the answer is a 502 (a stream: an error frame)."""


class BodyTooLargeError(httpx.TransportError):
    """An upstream body (or one of its stream events) is larger than proxycast accepts."""


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
    was the largest single cost of a proxied request (profiled with py-spy; see the README). Each
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

        def done() -> None:
            self._in_flight[index] -= 1

        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            done()
            raise
        assert isinstance(response.stream, httpx.AsyncByteStream)
        stream: httpx.AsyncByteStream = response.stream
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            stream = _Decompressed(stream, encoding, self._max_decoded)
            del response.headers["content-encoding"]
        response.stream = _Counted(stream, done)
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


@contextlib.contextmanager
def mapped_errors(provider: ProviderConfig, server: ServerConfig) -> Iterator[None]:
    """Turn httpx's transport errors into :class:`UpstreamError`s that name the provider."""
    try:
        yield
    except httpx.TimeoutException as exc:
        waited = (
            server.connect_timeout
            if isinstance(exc, httpx.ConnectTimeout)
            else server.upstream_timeout
        )
        raise UpstreamTimeoutError(
            f"Provider {provider.name!r} did not answer within {waited:g} s."
        ) from exc
    except httpx.ConnectError as exc:
        raise UpstreamUnavailableError(
            f"Cannot connect to provider {provider.name!r} at {provider.url}."
        ) from exc
    except BodyTooLargeError as exc:
        raise UpstreamUnavailableError(f"Provider {provider.name!r} sent {exc}.") from exc
    except httpx.DecodingError as exc:
        raise UpstreamUnavailableError(
            f"Provider {provider.name!r} sent a body that cannot be decoded ({exc})."
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamUnavailableError(
            f"Provider {provider.name!r} broke off the connection ({type(exc).__name__})."
        ) from exc


class Upstream:
    """Base of the provider adapters: sends requests with a key from the pool, maps failures.

    Args:
        provider: the provider's configuration.
        server: the server's configuration (timeouts).
        client: the worker's pooled client.
    """

    def __init__(
        self, provider: ProviderConfig, server: ServerConfig, client: httpx.AsyncClient
    ) -> None:
        self.provider = provider
        self.server = server
        self.client = client
        self._keys = itertools.cycle(provider.api_keys) if provider.api_keys else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.provider.name!r}>"

    def next_key(self) -> str | None:
        """The next key of the pool (round robin), or None for an upstream that needs none."""
        return next(self._keys) if self._keys is not None else None

    def auth_headers(self, key: str | None) -> dict[str, str]:
        raise NotImplementedError

    dialect = ""
    """The upstream's error dialect (``openai``, ``anthropic``, ``gemini``)."""

    def error_message(self, body: Any) -> UpstreamErrorInfo | None:
        """What the upstream's error body says, None when it is not in the upstream's shape."""
        raise NotImplementedError

    async def open(self, url: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """POST ``body`` and return the open response once its status is a success.

        The caller must ``aclose()`` the response. Raises :class:`UpstreamError` for a failure status
        (translated into a proxycast error) or a transport failure.
        """
        all_headers = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            **self.auth_headers(self.next_key()),
            **headers,
        }
        request = self.client.build_request("POST", url, content=body, headers=all_headers)
        with mapped_errors(self.provider, self.server):
            response = await self.client.send(request, stream=True)
        if response.status_code < 400:
            return response
        try:
            with mapped_errors(self.provider, self.server):
                data = await _read_limited(response, _ERROR_BODY_LIMIT)
        finally:
            await aclose_shielded(response)  # noqa: ASYNC102 - shielded inside
        raise self.status_error(response.status_code, data, response.headers)

    def status_error(self, status: int, data: bytes, headers: httpx.Headers) -> ProxycastError:
        """The proxycast error for an upstream failure status (PROTOCOLS.md 5.2)."""
        if status in (401, 403):
            # The provider's credentials are proxycast's problem, not the client's; the upstream's
            # message may quote part of the key, so it is not passed on.
            return UpstreamUnavailableError(
                f"Provider {self.provider.name!r} rejected proxycast's credentials "
                f"(upstream status {status}); check the provider's api_keys in the configuration."
            )
        info: UpstreamErrorInfo | None = None
        try:
            info = self.error_message(json.loads(data))
        except ValueError:
            pass
        if info is None:
            text = data.decode("utf-8", "replace").strip()[:500] or "(empty body)"
            info = UpstreamErrorInfo(f"Provider {self.provider.name!r} answered {status}: {text}")
        if status == 529:
            status = 503
        passed = {k: headers[k] for k in ("retry-after", "retry-after-ms") if k in headers}
        return UpstreamError(
            info.message,
            status=status,
            kind=kind_for_status(status),
            param=info.param,
            code=info.code,
            headers=passed,
            native=(self.dialect, info.type) if info.type else None,
        )


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) >= limit:
            break
    return bytes(data[:limit])


async def aclose_shielded(response: httpx.Response) -> None:
    """Close an upstream response even inside a cancelled scope (the connection must not leak)."""
    with trio.move_on_after(_CLOSE_SECONDS, shield=True):
        await response.aclose()


async def iter_body(
    response: httpx.Response, provider: ProviderConfig, server: ServerConfig
) -> AsyncGenerator[bytes, None]:
    """The response body piece by piece as it arrives, transport failures mapped.

    An SSE event larger than ``server.max_event_bytes`` ends it with an error (the relay turns it into
    an error frame), and so does the end of ``shutdown_grace`` when the gateway is shutting down.
    """
    iterator = response.aiter_bytes()
    events = _EventSizes(server.max_event_bytes)
    draining = current_draining() or Draining()  # none: not served by serve_connections
    try:
        while True:
            with mapped_errors(provider, server):
                with draining.bounded() as scope:
                    try:
                        chunk = await iterator.__anext__()
                    except StopAsyncIteration:
                        return
                if scope.cancelled_caught:
                    raise ShuttingDownError(
                        "The gateway is shutting down: the stream outlived its shutdown grace "
                        f"of {server.shutdown_grace:g} s."
                    )
                if not events.fits(chunk):
                    raise BodyTooLargeError(
                        f"a stream event larger than {server.max_event_bytes} bytes "
                        "(server.max_event_bytes)"
                    )
            yield chunk
    finally:
        with trio.move_on_after(_CLOSE_SECONDS, shield=True):
            await iterator.aclose()  # type: ignore[attr-defined]


class ShuttingDownError(ProxycastError):
    status = 503


class _EventSizes:
    """Tracks the size of the SSE event being received, across chunks, in constant work per byte.

    An event ends at a blank line: two line ends in a row (``\n\n``, ``\r\n\r\n``, ``\r\r``).
    """

    _BLANK_LINES = (b"\n\n", b"\r\r", b"\r\n\r\n")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._size = 0
        self._tail = b""  # the last bytes of the previous chunk: a blank line may straddle two

    def fits(self, chunk: bytes) -> bool:
        """Account for ``chunk``; False once the event being received is larger than the limit."""
        window = self._tail + chunk
        end = -1  # where the last complete event ends in the window
        for blank in self._BLANK_LINES:
            found = window.rfind(blank)
            if found != -1:
                end = max(end, found + len(blank))
        self._size = len(window) - end if end != -1 else self._size + len(chunk)
        self._tail = window[-3:]
        return self._size <= self._limit
