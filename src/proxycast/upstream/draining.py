"""The shutdown deadline of the streams waiting on their upstreams: set by the server's connection loop
when it drains, checked by every upstream body read (``upstream/provider.py``)."""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any

import trio


class Draining:
    """The shutdown deadline for the waits of streams on their upstreams: none while serving,
    ``grace`` once draining.

    Not a cancel scope per wait (one per piece of a stream's body, held as long as the stream waits:
    0.75 KB of every open stream, and its cost on every piece): a stream checks :attr:`expired`
    before each wait, and :meth:`expire`, at the deadline, ends the waits in progress (their upstream
    sockets are notified as closing and shut down: the read fails at once and the stream ends with
    its error frame).
    """

    def __init__(self) -> None:
        self.deadline = math.inf
        self._sockets: set[Any] = set()
        """The upstream sockets of the streams open now (:meth:`watch`)."""

    @property
    def draining(self) -> bool:
        return self.deadline != math.inf

    @property
    def expired(self) -> bool:
        return self.deadline != math.inf and trio.current_time() >= self.deadline

    def begin(self, grace: float) -> None:
        self.deadline = trio.current_time() + grace

    async def expire(self) -> None:
        """At the deadline, wake every stream waiting on its upstream (run once draining)."""
        await trio.sleep_until(self.deadline)
        self.wake()

    def wake(self) -> None:
        """End the upstream reads of every open stream: the one in progress is woken, and the
        next fails too (a TLS read checkpoints once before it waits on its socket: a wake-up alone
        could come just before the wait)."""
        for sock in list(self._sockets):
            trio.lowlevel.notify_closing(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(trio.socket.SHUT_RDWR)

    def watch(self, sock: Any) -> None:
        """A stream waits on ``sock`` (a trio socket) until :meth:`unwatch`."""
        self._sockets.add(sock)

    def unwatch(self, sock: Any) -> None:
        self._sockets.discard(sock)


_draining: contextvars.ContextVar[Draining | None] = contextvars.ContextVar(
    "proxycast_draining", default=None
)


def current_draining() -> Draining | None:
    """The serving worker's :class:`Draining` (None outside a server's connection loop)."""
    return _draining.get()


def serving_draining(draining: Draining) -> None:
    """Make ``draining`` the current task's (and its children's): the server's connection loop
    (``server/connections.py``) sets it before it serves."""
    _draining.set(draining)
