"""The health of the providers' keys as shared state: the rests a worker's key pools start are
queued here, a backend (the machine's SQLite file, Redis) writes them where the other workers read
them, and what it reads back is taught to the pools. Picking a key never waits for the backend: the
pools stay the worker's own, synced every :data:`SYNC_SECONDS`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from proxycast.keys import KeyPool

SYNC_SECONDS = 0.5
"""How often a worker reads the rests every worker wrote (at once after a rest of its own)."""

Rest = tuple[str, float, str]
"""``(label, seconds left, reason)``; the label is ``provider#N``, or ``provider#*`` for a provider
benched as a whole."""


class HealthBoard:
    """The key pools of one worker, as the shared state sees them."""

    def __init__(self) -> None:
        self.labels: list[str] = []
        """Every key's label, and each provider's ``provider#*``: what a backend reads."""
        self._slots: dict[str, tuple[KeyPool, int | None]] = {}
        self._pending: list[Rest] = []
        self.wake = trio.Event()
        """Set when a rest is waiting to be written."""

    def watch(self, pools: Mapping[str, KeyPool]) -> None:
        """Share the health of these providers' keys (those of an earlier call are forgotten)."""
        self.labels, self._slots, self._pending = [], {}, []
        for name, pool in pools.items():
            pool.listener = self._rested(name, pool)
            for index in (None, *range(pool.size or 1)):
                label = f"{name}#*" if index is None else pool.label(index)
                self._slots[label] = (pool, index)
                self.labels.append(label)

    def _rested(self, name: str, pool: KeyPool) -> Callable[[int | None, float, str], None]:
        def rested(index: int | None, seconds: float, reason: str) -> None:
            label = f"{name}#*" if index is None else pool.label(index)
            self._pending.append((label, seconds, reason))
            self.wake.set()

        return rested

    async def wait(self) -> None:
        """Until the next sync is due."""
        with trio.move_on_after(SYNC_SECONDS):
            await self.wake.wait()
        self.wake = trio.Event()

    def take(self) -> list[Rest]:
        """The rests to write (put them back with :meth:`keep` when the write failed)."""
        pending, self._pending = self._pending, []
        return pending

    def keep(self, rests: list[Rest]) -> None:
        self._pending[:0] = rests

    def resting(self) -> list[Rest]:
        """Every rest under way in this worker's pools (written back after an outage)."""
        out = []
        for label, (pool, index) in self._slots.items():
            for rested, seconds, reason in pool.resting():
                if rested == index:
                    out.append((label, seconds, reason))
        return out

    def learn(self, rests: Iterable[Rest]) -> None:
        """Rest the keys other workers rested (a rest never shortens)."""
        for label, seconds, reason in rests:
            slot = self._slots.get(label)
            if slot is not None and seconds > 0:
                slot[0].learn(slot[1], seconds, reason)
