"""The extent of one request, and what it holds until it ends: closed, shielded, however it ends
(answered, failed, or its client gone), so that nothing a request opened (an upstream response, a body
reservation, its accounting record) outlives it."""

from __future__ import annotations

import contextvars
import inspect
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

_CLOSE_SECONDS = 10.0

_request_resources: contextvars.ContextVar[request_scope] = contextvars.ContextVar(
    "proxycast_request_resources"
)


def request_resources() -> request_scope:
    """The current request's resources: what is pushed here is closed when the request ends,
    however it ends (answered, failed, or its client gone)."""
    return _request_resources.get()


class request_scope:  # noqa: N801 - used as a function: ``async with request_scope():``
    """The extent of one HTTP request, and what it holds until it ends: closed (shielded, last
    pushed first, every one even when another fails) when it ends.

    ``contextlib.AsyncExitStack``'s two methods that proxycast uses, lighter: an open stream holds
    this for its whole length (the stack's deque and wrappers were 1.5 KB of each of 10,000 streams),
    and a class, not an ``asynccontextmanager``, as it runs twice per request.
    """

    __slots__ = ("_closers", "_token")

    def __init__(self) -> None:
        self._closers: list[Callable[[], object]] = []

    def callback(self, close: Callable[[], None]) -> None:
        self._closers.append(close)

    def push_async_callback(self, close: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(close)

    async def __aenter__(self) -> request_scope:
        self._token = _request_resources.set(self)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        _request_resources.reset(self._token)
        failure: BaseException | None = None
        while self._closers:
            try:
                closing = self._closers.pop()()
                if inspect.isawaitable(closing):  # each its own time: none starves the next
                    with trio.move_on_after(_CLOSE_SECONDS, shield=True):
                        await closing
            except BaseException as exc:  # the others are closed all the same
                failure = failure or exc
        if failure is not None:
            raise failure
