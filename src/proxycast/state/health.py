"""The health of the providers' keys as shared state: the rests a worker's key pools start are
queued here, a backend (the machine's SQLite file, Redis) writes them where the other workers read
them, and what it reads back is taught to the pools. Picking a key never waits for the backend: the
pools stay the worker's own, synced every :data:`SYNC_SECONDS`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from proxycast.upstream.keys import KeyPool

SYNC_SECONDS = 0.5
"""How often a worker reads the rests every worker wrote (at once after a rest of its own)."""

Rest = tuple[str, float, str]
"""``(name, seconds left, reason)``. A key's name is ``provider#N:DIGEST`` (its label and a short digest
of the key: a rest follows the key, not its position, across restarts and edits of the list), a
provider benched as a whole is ``provider#*``."""


class HealthBoard:
    """The key pools of one worker, as the shared state sees them."""

    def __init__(self) -> None:
        self.names: list[str] = []
        """Every key's name, and each provider's ``provider#*``: what a backend reads."""
        self._slots: dict[str, tuple[KeyPool, int | None]] = {}
        self._pending: set[str] = set()
        self.wake = trio.Event()
        """Set when a rest is waiting to be written."""

    def watch(self, pools: Mapping[str, KeyPool]) -> None:
        """Share the health of these providers' keys (those of an earlier call are forgotten)."""
        self.names, self._slots, self._pending = [], {}, set()
        for provider, pool in pools.items():
            pool.listener = self._rested(provider, pool)
            for index in (None, *range(pool.size or 1)):
                name = self._name(provider, pool, index)
                self._slots[name] = (pool, index)
                self.names.append(name)

    @staticmethod
    def _name(provider: str, pool: KeyPool, index: int | None) -> str:
        if index is None:
            return f"{provider}#*"
        digest = pool.fingerprints[index] if index < len(pool.fingerprints) else "-"
        return f"{pool.label(index)}:{digest}"

    def _rested(self, provider: str, pool: KeyPool) -> Callable[[int | None, float, str], None]:
        def rested(index: int | None, seconds: float, reason: str) -> None:
            self._pending.add(self._name(provider, pool, index))
            self.wake.set()

        return rested

    async def wait(self) -> None:
        """Until the next sync is due."""
        with trio.move_on_after(SYNC_SECONDS):
            await self.wake.wait()
        self.wake = trio.Event()

    def take(self) -> list[Rest]:
        """The rests to write, as long as they are now (put them back with :meth:`keep` when the
        write failed: they are measured again at the next :meth:`take`)."""
        pending, self._pending = self._pending, set()
        return [rest for rest in (self._now(name) for name in pending) if rest[1] > 0]

    def keep(self, rests: Iterable[Rest]) -> None:
        self._pending.update(name for name, _, _ in rests)

    def resting(self) -> list[Rest]:
        """Every rest under way in this worker's pools (written back after an outage); the rests
        waiting to be written are among them."""
        self._pending.clear()
        return [rest for rest in map(self._now, self._slots) if rest[1] > 0]

    def _now(self, name: str) -> Rest:
        pool, index = self._slots[name]
        seconds, reason = pool.left(index)
        return name, seconds, reason

    def learn(self, rests: Iterable[Rest]) -> None:
        """Rest the keys other workers rested (a rest never shortens)."""
        for name, seconds, reason in rests:
            slot = self._slots.get(name)
            if slot is not None and seconds > 0:
                slot[0].learn(slot[1], seconds, reason)
