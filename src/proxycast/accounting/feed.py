"""The live feed: each finished gateway request, as the access log describes it, broadcast to whoever
watches (the dashboard's live traffic page, over SSE).

One feed per worker, in memory: with ``--workers N`` a watcher sees the requests of the worker its
connection landed on. Publishing never waits: every watcher has a bounded queue, and a watcher too slow
to keep up loses the events that do not fit (counted, and told), never slowing a request. A named
client's watcher is given its own requests only (filtered when published, so that others' traffic never
fills its queue); the unnamed keys' watchers get every request. Events carry no bodies and no keys (key
labels only), and pass through the redactor once, when published.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import attrs
import trio

from proxycast.accounting.clients import Client

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

QUEUE = 256
"""Events a watcher may lag behind before it loses some."""


@attrs.define(eq=False)
class Watcher:
    """One subscriber: whose requests it gets, its queue and how many events it lost."""

    client: Client | None
    """The client whose requests it gets (compared as a whole, not by name); None: everyone's."""
    receive: trio.MemoryReceiveChannel[str]
    """Events as JSON; closed when the feed closes."""
    _send: trio.MemorySendChannel[str]
    dropped: int = 0


@attrs.frozen
class KeyFailure:
    """The last failed attempt the feed saw on a provider key."""

    at: float
    """Unix seconds (the request's arrival)."""
    outcome: str
    """As in the access log's attempts: an upstream status, ``timeout``, ``unreachable``,
    ``key refused``."""


class Feed:
    """The broadcast of one worker's finished requests.

    Args:
        redact: hides configured secrets (applied to every event, once).
        queue: per-watcher queue size (:data:`QUEUE`).
    """

    def __init__(self, redact: Callable[[str], str], queue: int = QUEUE) -> None:
        self._redact = redact
        self._queue = queue
        self._watchers: set[Watcher] = set()
        self._closed = False
        self.last_failures: dict[str, KeyFailure] = {}
        """``provider#N`` -> its last failed attempt (this worker's)."""

    def use(self, redact: Callable[[str], str]) -> None:
        """Hide the secrets of a reloaded configuration from now on (the feed, its watchers with
        it, outlives the reload)."""
        self._redact = redact

    def publish(self, client: Client, event: dict[str, Any]) -> None:
        """Broadcast one finished request (never blocks; a full queue loses the event).

        Args:
            client: who made it (a watcher for a client gets that client's requests only).
            event: the access log's fields, plus ``time``.
        """
        for attempt in event.get("attempts", ()):
            label, _, outcome = attempt.partition(":")
            if outcome and not outcome.startswith("2") and outcome != "pending":
                self.last_failures[label] = KeyFailure(event["time"], outcome)
        item: str | None = None
        for watcher in self._watchers:
            if watcher.client is not None and watcher.client != client:
                continue
            if item is None:
                item = self._redact(json.dumps(event, separators=(",", ":")))
            try:
                watcher._send.send_nowait(item)
            except trio.WouldBlock:
                watcher.dropped += 1

    @contextlib.contextmanager
    def watch(self, client: Client | None = None) -> Iterator[Watcher]:
        """Subscribe for the extent of the ``with`` block.

        Args:
            client: get only this client's requests (a named client's view); None: everyone's.
        """
        send, receive = trio.open_memory_channel[str](self._queue)
        watcher = Watcher(client, receive, send)
        if self._closed:
            send.close()
        else:
            self._watchers.add(watcher)
        try:
            yield watcher
        finally:
            self._watchers.discard(watcher)
            send.close()
            receive.close()

    def close(self) -> None:
        """End every watch (the server is shutting down: open streams must not hold up its drain)."""
        self._closed = True
        for watcher in self._watchers:
            watcher._send.close()
        self._watchers.clear()
