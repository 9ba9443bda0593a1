"""Client connections: hypercorn's trio worker loop, with HTTP/1.1 connection handling that recycles.

Hypercorn's HTTP/1.1 protocol recycles a connection (re-arms the keep-alive timer, or closes it after
``Connection: close``) from inside the request's task, at the moment the response ends. quart-trio cancels
that task as soon as the end of the request is queued to it, so the recycling was cut short at its first
checkpoint: idle connections were never dropped, ``Connection: close`` answers never closed, and a
connection answered before its request body had arrived (a 401 before the body) was left paused for good,
its next request never read (all three seen under abuse: slow and half-sent requests). Here:

- the recycling is shielded, so it always completes;
- the body that follows an early answer is read and dropped (up to :data:`DRAIN_LIMIT` bytes: beyond it, or
  for a chunked body, the answer says ``Connection: close`` and the connection is closed);
- a request framed with both Content-Length and Transfer-Encoding is refused, and the connection closed
  (RFC 9112 6.3: its framing is ambiguous, the classic request smuggling shape);
- on shutdown the listening sockets close at once (new connections are refused, not left in the backlog),
  idle connections close at once, answers say ``Connection: close``, and upstream streams get until
  ``shutdown_grace`` (:class:`Draining`) before they are ended with an error frame.
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from typing import TYPE_CHECKING

import h11
import trio
from hypercorn.events import Closed, Updated
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import Body, Data, EndBody, Response, StreamClosed
from hypercorn.protocol.h11 import STREAM_ID, H11Protocol
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import parse_socket_addr, repr_socket_addr

from proxycast.upstream.draining import Draining, serving_draining

if TYPE_CHECKING:
    import socket
    from collections.abc import Awaitable, Callable

    from hypercorn.config import Config
    from hypercorn.protocol.events import Event as StreamEvent
    from hypercorn.typing import AppWrapper, LifespanState

    from proxycast.core.overload import Overload

DRAIN_LIMIT = 1024 * 1024
"""Request body bytes read and dropped after an early answer, to keep the connection usable."""

HARD_STOP_MARGIN = 3.0
"""Seconds past ``shutdown_grace`` before every remaining connection is cut (the streams' error frames,
sent at the grace, need a moment to go out)."""


def _error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()


class _H11(H11Protocol):
    """Hypercorn's HTTP/1.1 protocol, recycling connections reliably (see the module docstring)."""

    _body_left: int | None = 0
    _dropping = False
    _dropped = 0

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, StreamClosed):
            # quart-trio cancels the request's task once the end of the request is queued to it,
            # which happens first thing in here: without the shield, the rest never ran.
            with trio.CancelScope(shield=True):
                await self._maybe_recycle()
            return
        if isinstance(event, Response) and event.status_code >= 200 and self._must_close():
            event = dataclasses.replace(event, headers=[*event.headers, (b"connection", b"close")])
        await super().stream_send(event)

    def _must_close(self) -> bool:
        """An answer that cannot leave the connection usable says so (``Connection: close``)."""
        if self.context.terminated.is_set():
            return True
        if self.connection.their_state is not h11.SEND_BODY:
            return False
        return self._body_left is None or self._body_left > DRAIN_LIMIT

    async def _maybe_recycle(self) -> None:
        await self._close_stream()
        connection = self.connection
        if (
            not self.context.terminated.is_set()
            and connection.our_state is h11.DONE
            and connection.their_state is h11.SEND_BODY
            and self._body_left is not None
            and self._body_left <= DRAIN_LIMIT
        ):
            # answered before the body arrived: read it and drop it, then serve the next request
            self._dropping = True
            self._dropped = 0
            await self.can_read.set()
            await self.send(Updated(idle=True))  # the keep-alive timeout bounds the wait
            return
        await super()._maybe_recycle()

    async def _create_stream(self, request: h11.Request) -> None:
        # raw_items(): the list itself (iterating h11's Headers goes through Sequence, item by item)
        headers = {name.lower(): value for name, value in request.headers.raw_items()}
        if b"transfer-encoding" in headers and b"content-length" in headers:
            await self._refuse(400, "The request has both Content-Length and Transfer-Encoding.")
            return
        length = headers.get(b"content-length")
        chunked = b"transfer-encoding" in headers
        self._body_left = None if chunked else int(length or 0)
        await super()._create_stream(request)

    async def _refuse(self, status: int, message: str) -> None:
        body = _error_body(message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self._send_h11_event(h11.Response(status_code=status, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())
        await self.send(Closed())

    async def _handle_events(self) -> None:
        while True:
            if self.connection.they_are_waiting_for_100_continue and not self._dropping:
                await self._send_h11_event(
                    h11.InformationalResponse(
                        status_code=100, headers=self.config.response_headers("h11")
                    )
                )
            try:
                event = self.connection.next_event()
            except h11.RemoteProtocolError as error:
                if self.connection.our_state in {h11.IDLE, h11.SEND_RESPONSE}:
                    await self._send_error_response(error.error_status_hint)
                await self.send(Closed())
                break
            if isinstance(event, h11.Data) and self._body_left is not None:
                self._body_left -= len(event.data)
            if self._dropping and isinstance(event, h11.Data):
                self._dropped += len(event.data)
                if self._dropped > DRAIN_LIMIT:  # more than its Content-Length said: give up
                    await self.send(Closed())
                    break
                continue
            if self._dropping and isinstance(event, h11.EndOfMessage):
                self._dropping = False
                try:
                    self.connection.start_next_cycle()
                except h11.LocalProtocolError:
                    await self.send(Closed())
                    break
                await self.send(Updated(idle=True))
                continue
            if isinstance(event, h11.Request):
                await self.send(Updated(idle=False))
                await self._check_protocol(event)
                await self._create_stream(event)
                if self.connection.our_state is h11.MUST_CLOSE:  # refused
                    break
            elif event is h11.PAUSED:
                await self.can_read.clear()
                await self.can_read.wait()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.NEED_DATA:
                break
            elif self.stream is None:
                continue  # the rest of a request already answered (and being closed)
            elif isinstance(event, h11.Data):
                await self.stream.handle(Body(stream_id=STREAM_ID, data=event.data))
            elif isinstance(event, h11.EndOfMessage):
                await self.stream.handle(EndBody(stream_id=STREAM_ID))
            elif isinstance(event, Data):  # a WebSocket's bytes
                await self.stream.handle(event)


class _TCPServer(TCPServer):
    """Hypercorn's trio connection handler (plain TCP only), speaking HTTP/1.1 through :class:`_H11`;
    an idle connection is closed early while the overload manager sheds streams."""

    overload: Overload | None = None
    _waited = False

    async def _idle_timeout(self) -> None:
        overload = self.overload
        if overload is None or not self._waited:  # a new connection gets to send its request
            self._waited = True
            await super()._idle_timeout()
            return
        with overload.idle(self.config.keep_alive_timeout) as waiting:
            try:
                await self.context.terminated.wait()
            finally:
                overload.done(waiting)
        with trio.CancelScope(shield=True):
            await self._initiate_server_close()

    async def run(self) -> None:
        socket = self.stream.socket
        try:
            client = parse_socket_addr(socket.family, socket.getpeername())
            server = parse_socket_addr(socket.family, socket.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                self.protocol = ProtocolWrapper(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                    "http/1.1",
                )
                self.protocol.protocol = _H11(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                )
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
        except OSError:
            pass
        finally:
            try:
                await self._close()  # noqa: ASYNC102 - aclose() closes the socket even when cancelled
            finally:
                # The protocols hold this object's send method, and it holds them: a reference
                # cycle, which left every closed connection (~3 KB, its buffers and socket objects)
                # to the cyclic garbage collector's rare full passes. The connection's tasks are over.
                self.__dict__.pop("protocol", None)


def _overloaded(
    handler: Callable[[trio.SocketStream], _TCPServer],
    overload: Overload,
    stream: trio.SocketStream,
) -> _TCPServer:
    server = handler(stream)
    server.overload = overload
    return server


async def serve_connections(
    app: AppWrapper,
    config: Config,
    sockets: list[socket.socket],
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    overload: Overload | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on the listening ``sockets`` (hypercorn's ``worker_serve``, reworked for shutdown).

    ``overload``, the worker's overload manager, closes idle keep-alive connections while it sheds.

    When ``shutdown_trigger`` returns: the sockets are closed at once (connections are refused, not
    queued for a worker that will never accept them), idle keep-alive connections are closed at once,
    answers still in progress say ``Connection: close``, upstream streams get ``config.graceful_timeout``
    seconds before they end with an error frame (:class:`Draining`), and whatever is left
    :data:`HARD_STOP_MARGIN` seconds later is cut.
    """
    draining = Draining()
    serving_draining(draining)
    state: LifespanState = {}
    lifespan = Lifespan(app, config, state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
            binds = [f"http://{repr_socket_addr(s.family, s.getsockname())}" for s in sockets]
            handler = partial(_TCPServer, app, config, context, ConnectionState(state.copy()))
            if overload is not None:
                handler = partial(_overloaded, handler, overload)
            try:
                async with trio.open_nursery() as accept_nursery:
                    accept_nursery.start_soon(
                        partial(
                            trio.serve_listeners, handler, listeners, handler_nursery=server_nursery
                        )
                    )
                    task_status.started(binds)
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                    accept_nursery.cancel_scope.cancel()  # serve_listeners closes the listeners
            finally:
                await context.terminated.set()  # noqa: ASYNC102 - no checkpoint; idle connections close now
                for listener in listeners:
                    listener.socket.close()
                draining.begin(config.graceful_timeout)
                lifespan_nursery.start_soon(draining.expire)
                server_nursery.cancel_scope.deadline = (
                    trio.current_time() + config.graceful_timeout + HARD_STOP_MARGIN
                )
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
