"""The overload manager: a worker's resident memory against ``[server] max_memory_mb``, and what is
shed while it runs high (in the spirit of Envoy's overload manager).

One background task samples the worker's RSS (``/proc/self/statm``: one small read) every
:data:`POLL_SECONDS`; requests read the state it leaves, never the memory itself. The states, each
the value of the ``proxycast_overload_state`` gauge:

- 0, normal;
- 1, shedding streams, at :data:`SHED_STREAMS_AT` of the limit: new streamed model requests (and
  Responses WebSockets) get 503 with ``Retry-After`` in the client's dialect, and idle keep-alive
  connections are closed (each holds its buffers, and the clients will come back later);
- 2, shedding all, at :data:`SHED_ALL_AT`: every new model request gets the 503.

A state is left once the memory is :data:`HYSTERESIS` of the limit below its threshold (a sample
that hovers at a threshold does not flip the state at every poll). Between two samples, a request
whose declared body would take the last sample past the second threshold is refused as well: a
flood of large bodies arrives faster than one poll. A body admitted counts until the first sample
after it has arrived (:meth:`Overload.arrived`): one still arriving when a sample is taken is not in
that sample yet, whatever the time it takes to come. A large body (:data:`LARGE_BODY_BYTES`) is
admitted on a fresh sample, with room for three times its size: its bytes, and its parse's text and
objects (large parses run one at a time).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import trio

from proxycast.core import allocator
from proxycast.errors import ProxycastError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger("proxycast")

NORMAL, SHEDDING_STREAMS, SHEDDING_ALL = 0, 1, 2
SHED_STREAMS_AT = 0.85
"""Share of ``max_memory_mb`` past which new streams are refused and idle connections closed."""
SHED_ALL_AT = 0.95
"""Share of ``max_memory_mb`` past which every new model request is refused."""
HYSTERESIS = 0.05
"""Share of the limit the memory must fall below a threshold before its state is left."""
POLL_SECONDS = 0.2
"""How often the worker's RSS is read."""
LARGE_BODY_BYTES = 1024 * 1024
"""A body at least this large is admitted on a fresh sample of the memory (one small read)."""
RETRY_AFTER = "2"
"""Seconds a shed client is told to wait (``Retry-After``)."""

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """The worker's resident memory (``/proc/self/statm``'s second field); 0 where there is none."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class Overload:
    """One worker's overload state (:meth:`run` keeps it current).

    Args:
        limit_mb: ``[server] max_memory_mb``.
        measure: the worker's resident memory in bytes (:func:`rss_bytes`).
        report: called with the state at each change (the ``proxycast_overload_state`` gauge).
    """

    def __init__(
        self,
        limit_mb: float,
        measure: Callable[[], int] = rss_bytes,
        report: Callable[[int], None] = lambda state: None,
    ) -> None:
        self.limit = int(limit_mb * 1024 * 1024)
        self.state = NORMAL
        self.rss = 0
        """The last sample, in bytes."""
        self._measure = measure
        self.report = report
        self._arriving = 0
        """Bytes of the bodies admitted that are still arriving (in no sample yet, or in part)."""
        self._reserved = 0
        """Bytes of the bodies that arrived since the last sample (not in it yet)."""
        self._idle: set[trio.CancelScope] = set()
        """The keep-alive waits of idle connections (:meth:`idle`), cancelled when streams are shed."""

    @property
    def reason(self) -> str:
        """Why requests are shed (for ``/health`` and the 503s); empty while normal."""
        if self.state == NORMAL:
            return ""
        share = self.rss / self.limit * 100
        what = "new model requests" if self.state == SHEDDING_ALL else "new streams"
        return (
            f"memory at {share:.0f}% of server.max_memory_mb ({self.rss // 2**20} of "
            f"{self.limit // 2**20} MB): {what} are refused"
        )

    def sample(self) -> None:
        """Read the memory and move to the state it calls for."""
        self.rss = self._measure()
        self._reserved = 0
        state = self._next(self.rss / self.limit)
        if state != self.state:
            before, self.state = self.state, state
            if state == NORMAL:
                log.warning(
                    "overload: memory back to %d MB, requests admitted again", self.rss >> 20
                )
            else:
                log.warning("overload: %s", self.reason)
            self.report(state)
            if before == NORMAL:
                self._close_idle()

    def _next(self, share: float) -> int:
        if share >= SHED_ALL_AT:
            return SHEDDING_ALL
        if share >= SHED_STREAMS_AT:
            stays = self.state == SHEDDING_ALL and share >= SHED_ALL_AT - HYSTERESIS
            return SHEDDING_ALL if stays else SHEDDING_STREAMS
        if share >= SHED_STREAMS_AT - HYSTERESIS:
            return min(self.state, SHEDDING_STREAMS)
        return NORMAL

    async def run(self) -> None:
        """Sample every :data:`POLL_SECONDS`, until cancelled."""
        self.report(self.state)
        while True:
            if self.state != NORMAL:  # what was freed is given back, so that the state can end
                allocator.trim()
            self.sample()
            await trio.sleep(POLL_SECONDS)

    def admit(self, *, stream: bool, body_bytes: int = 0) -> int:
        """Let a new model request in, or raise its 503.

        Args:
            stream: whether it streams (refused from :data:`SHEDDING_STREAMS` on).
            body_bytes: the body it declares: refused when it, and its parse, would take the
                memory past :data:`SHED_ALL_AT` with the bodies still counted; else counted until
                the first sample after it has arrived.

        Returns:
            The bytes counted: hand them to :meth:`arrived` once the body is read (or is not).
        """
        if body_bytes >= LARGE_BODY_BYTES:  # the memory now, not as it was up to a poll ago
            self.sample()
        state = self.state
        if state == SHEDDING_ALL or (stream and state == SHEDDING_STREAMS):
            raise self._refusal()
        if body_bytes:
            counted = self.rss + self._arriving + self._reserved
            # room for the body, and for its parse (its text and its objects, made once it has
            # arrived: twice the body, one parse at a time)
            if counted + 3 * body_bytes > self.limit * SHED_ALL_AT:
                raise self._refusal(
                    f"memory at {counted / self.limit:.0%} of server.max_memory_mb ({counted >> 20}"
                    f" of {self.limit >> 20} MB, with the bodies arriving): a body of {body_bytes}"
                    f" bytes, with its parse, would take it past {SHED_ALL_AT:.0%}"
                )
            self._arriving += body_bytes
        return body_bytes

    def arrived(self, body_bytes: int) -> None:
        """A body counted by :meth:`admit` was read (or its reading ended): counted until the next
        sample, which has it."""
        self._arriving -= body_bytes
        self._reserved += body_bytes

    def idle(self, keep_alive: float) -> trio.CancelScope:
        """The wait of an idle keep-alive connection: ``keep_alive`` seconds, cut short when
        streams start being shed (already past when they are). Enter it, then :meth:`done`."""
        scope = trio.move_on_after(0 if self.state != NORMAL else keep_alive)
        self._idle.add(scope)
        return scope

    def done(self, scope: trio.CancelScope) -> None:
        self._idle.discard(scope)

    def _close_idle(self) -> None:
        for scope in self._idle:
            scope.cancel()
        self._idle.clear()

    def _refusal(self, reason: str = "") -> ProxycastError:
        return ProxycastError(
            f"The gateway is overloaded ({reason or self.reason}); retry shortly.",
            status=503,
            kind="overloaded",
            headers={"retry-after": RETRY_AFTER},
        )
