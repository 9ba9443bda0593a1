"""A small HTTP/1.1 server on trio and h11 for the fake upstreams.

It gives the fakes what an ASGI server hides: the exact moment a client abandons a request (the socket
reaches EOF while the answer is still being written, or before it began) and the power to cut a
connection mid-answer, as a failing upstream does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypeVar

import attrs
import h11
import trio

log = logging.getLogger("proxycast.testing")


@attrs.define(eq=False)
class RecordedRequest:
    """One request a fake upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased header names."""
    body: bytes
    received_at: float
    """``trio.current_time()`` when the request was complete."""
    abandoned_at: float | None = None
    """When the client went away before the answer was complete, else None."""
    completed: bool = False
    """True once the whole answer was written."""
    ended: trio.Event = attrs.field(factory=trio.Event, repr=False)
    """Set once the answer was completed, abandoned or cut."""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def route(self) -> str:
        """The path without its query string."""
        return self.path.partition("?")[0]

    @property
    def query(self) -> str:
        return self.path.partition("?")[2]


@attrs.define(eq=False)
class Responder:
    _stream: trio.SocketStream
    _conn: h11.Connection
    dropped: bool = False
    head: bool = False
    """The request was a HEAD: the answer's headers are sent, never its body (RFC 9110 9.3.2)."""

    async def _send(self, event: h11.Event) -> None:
        if self.head and isinstance(event, h11.Data):
            return
        data = self._conn.send(event)
        if data:
            await self._stream.send_all(data)

    async def start(self, status: int, headers: list[tuple[str, str]]) -> None:
        await self._send(h11.Response(status_code=status, headers=headers))

    async def send(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())

    async def json(self, status: int, body: Any, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        data = json.dumps(body).encode()
        await self.start(
            status,
            [("content-type", "application/json"), ("content-length", str(len(data))), *headers],
        )
        await self.send(data)
        await self.end()

    async def drop(self) -> None:
        """Cut the connection now, as an upstream that crashes mid-answer does."""
        self.dropped = True
        await self._stream.aclose()


Handler = Callable[[RecordedRequest, Responder], Awaitable[None]]


class HTTPServer:
    """Serves ``handler`` on 127.0.0.1; records every request in :attr:`requests`."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self.requests: list[RecordedRequest] = []
        self.open_connections = 0
        """Connections clients hold open now (keep-alive ones included)."""
        self._no_connections = trio.Event()
        self._no_connections.set()
        self.port: int = 0
        self._arrived = trio.Event()

    async def wait_for_no_connections(self) -> None:
        """Wait until no client holds a connection open."""
        await self._no_connections.wait()

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests have arrived; all the requests so far."""
        while len(self.requests) < count:
            await self._arrived.wait()
        return self.requests

    async def serve(
        self, *, port: int = 0, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``port`` (0: a free one); ``task_status.started`` gets ``http://127.0.0.1:PORT``."""
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            task_status.started(f"http://127.0.0.1:{self.port}")

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        self.open_connections += 1
        if self._no_connections.is_set():
            self._no_connections = trio.Event()
        try:
            while True:
                request = await self._read_request(stream, conn)
                if request is None:
                    return
                responder = Responder(stream, conn, head=request.method == "HEAD")
                ok = await self._respond(stream, request, responder)
                if not ok or conn.our_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            self.open_connections -= 1
            if not self.open_connections:
                self._no_connections.set()
            await stream.aclose()

    async def _read_request(
        self, stream: trio.SocketStream, conn: h11.Connection
    ) -> RecordedRequest | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                if not data and head is None:
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                recorded = RecordedRequest(
                    method=head.method.decode(),
                    path=head.target.decode(),
                    headers={k.decode().lower(): v.decode() for k, v in head.headers},
                    body=bytes(body),
                    received_at=trio.current_time(),
                )
                self.requests.append(recorded)
                self._arrived.set()
                self._arrived = trio.Event()
                return recorded
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _respond(
        self, stream: trio.SocketStream, request: RecordedRequest, responder: Responder
    ) -> bool:
        """Run the handler while watching the socket; False when the connection must close."""
        client_gone = False
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                nonlocal client_gone
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if data:
                    # A pipelined next request: keep it for h11 and stop watching.
                    responder._conn.receive_data(data)
                    return
                client_gone = True
                if not request.completed:
                    request.abandoned_at = trio.current_time()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                await self._handler(request, responder)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                if request.abandoned_at is None and not responder.dropped:
                    request.abandoned_at = trio.current_time()
                client_gone = True
            except Exception:  # a request the fake cannot read: that request fails, not the fake
                log.exception("fake upstream: could not answer %s %s", request.method, request.path)
                if responder._conn.our_state is h11.SEND_RESPONSE:
                    await responder.json(
                        500, {"error": {"message": "the fake failed", "code": 500}}
                    )
                request.completed = responder._conn.our_state is h11.DONE
                client_gone = not request.completed
            else:
                request.completed = responder._conn.our_state is h11.DONE
            nursery.cancel_scope.cancel()
        request.ended.set()
        return not client_gone and not responder.dropped


ScriptT = TypeVar("ScriptT")


class FakeUpstream(Generic[ScriptT]):
    """What every fake upstream shares: queued scripts, recorded requests, serving on a free port.

    Subclasses set :attr:`url_suffix` and implement :meth:`answer`.
    """

    url_suffix = ""
    """Appended to ``http://127.0.0.1:PORT`` to make :attr:`base_url` (``/v1`` for OpenAI's)."""

    def __init__(self, default: ScriptT) -> None:
        self.default = default
        self._scripts: deque[ScriptT] = deque()
        self._server = HTTPServer(self._handle)
        self.base_url = ""
        """The URL a provider's ``base_url`` takes, once serving."""
        self.models: tuple[str, ...] = ()
        """The model ids its models endpoint lists."""
        self.rules: Callable[[RecordedRequest], ScriptT] | None = None
        """When set, what answers a request no queued script takes (instead of :attr:`default`):
        the rule-based model of :mod:`proxycast.testing.rules` sets it."""

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        return self._server.requests

    @property
    def open_connections(self) -> int:
        """Connections clients hold open now (keep-alive ones included)."""
        return self._server.open_connections

    async def wait_for_no_connections(self) -> None:
        """Wait until no client holds a connection open."""
        await self._server.wait_for_no_connections()

    async def wait_for_requests(self, count: int) -> list[RecordedRequest]:
        """Wait until at least ``count`` requests have arrived."""
        return await self._server.wait_for_requests(count)

    def script(self, *scripts: ScriptT) -> None:
        """Queue answers for the next requests; after them, :attr:`default` answers."""
        self._scripts.extend(scripts)

    def clear_scripts(self) -> None:
        """Forget the queued answers no request took (:attr:`default` answers the next)."""
        self._scripts.clear()

    async def serve(
        self, *, port: int = 0, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on ``port`` (0: a free one); ``task_status.started`` gets :attr:`base_url`."""
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(self._server.serve, port=port))
            self.base_url = url + self.url_suffix
            task_status.started(self.base_url)

    async def _handle(self, request: RecordedRequest, respond: Responder) -> None:
        if request.method == "HEAD" and request.route in ("", "/"):
            await respond.start(200, [("content-length", "0")])
            await respond.end()
            return
        if await self.side_route(request, respond):
            return  # models lists and embeddings do not take a queued script
        if not self.takes_script(request):
            script = self.default
        elif self._scripts:
            script = self._scripts.popleft()
        elif self.rules is not None:
            script = self.rules(request)
        else:
            script = self.default
        await self.answer(script, request, respond)

    def takes_script(self, request: RecordedRequest) -> bool:
        """Whether this request takes the next queued script (a warm-up that generates nothing
        does not)."""
        return True

    async def side_route(self, request: RecordedRequest, respond: Responder) -> bool:
        """Answer the routes that take no script (models lists, embeddings); False for the others."""
        return False

    async def answer(self, script: ScriptT, request: RecordedRequest, respond: Responder) -> None:
        raise NotImplementedError


def fake_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic unit-free vector for ``text`` (the fakes' embeddings): the same text, the same
    vector, so a test can check which input went where."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round(b / 255, 6) for b in (digest * (dimensions // len(digest) + 1))[:dimensions]]
