"""Selection among the providers and keys that serve one model: the strategies of ``[routing]
strategy`` and session affinity (``docs/routing.md``). Pure decisions on what this worker measured;
the exchange tells it what happened.

A *unit* is one key of one provider (``(provider name, key index)``). A plan starts with the units a
strategy ranks first, then goes on as ``order`` would (the plan skips whatever is resting or tried):

- ``order``: no preference (each request starts at the next provider, its keys in rotation);
- ``weighted``: smooth weighted round robin (nginx's): over any run of requests each unit's share is
  its weight's, exactly, with its turns spread out rather than bunched;
- ``least-busy``: the fewest requests in flight (ties keep the rotation's order);
- ``latency``: the lowest recent time to first byte, an exponentially weighted average; units never
  measured go first, and one request in :data:`EXPLORE_EVERY` starts at the unit measured longest
  ago, so a unit that recovered is measured again.

With ``affinity = "session"`` a session's requests start at the unit that last answered it, while
that unit is healthy; when it rests, the strategy picks another and the session moves there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from proxycast.config import Affinity, Strategy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from proxycast.config import RoutingConfig

Unit = tuple[str, int]
"""One key of one provider: its name and the key's index."""

ALPHA = 0.3
"""The weight of the newest time in the latency average."""

EXPLORE_EVERY = 20
"""``latency``: one request in this many starts at the unit measured longest ago."""


@attrs.frozen
class Settings:
    """The selection settings of one client-facing model."""

    strategy: Strategy
    affinity: Affinity
    weights: Mapping[str, float]

    def weight(self, unit: Unit) -> float:
        name, key = unit
        own = self.weights.get(f"{name}#{key + 1}")
        return own if own is not None else self.weights.get(name, 1.0)


class Selector:
    """What one worker knows for selection: the turns of weighted round robin, requests in flight,
    times to first byte, and the sessions' units (a bounded LRU)."""

    def __init__(self, routing: RoutingConfig, clock: Callable[[], float]) -> None:
        self._routing = routing
        self._clock = clock
        self._default = Settings(routing.strategy, routing.affinity, routing.weights)
        self._settings: dict[str, Settings] = {
            model: Settings(
                own.strategy or routing.strategy,
                own.affinity or routing.affinity,
                routing.weights if own.weights is None else own.weights,
            )
            for model, own in routing.models.items()
        }
        every = [self._default, *self._settings.values()]
        self.active = any(s.strategy != "order" or s.affinity != "none" for s in every)
        """Whether any model has a strategy or affinity (none: the exchange asks nothing here)."""
        self.counts_busy = any(s.strategy == "least-busy" for s in every)
        self.times = any(s.strategy == "latency" for s in every)
        self._current: dict[str, dict[Unit, float]] = {}
        self._busy: dict[Unit, int] = {}
        self._latency: dict[Unit, tuple[float, float]] = {}
        """Unit -> (average seconds to first byte, when last measured)."""
        self._requests = 0
        self._sessions: OrderedDict[str, Unit] = OrderedDict()

    def reconfigured(self, routing: RoutingConfig) -> Selector:
        """The selector of a reloaded configuration, with this one's memory: the sessions' keys,
        the times to first byte, the requests in flight (the same tables: requests that started
        before the reload end in them) and the weighted turns."""
        new = Selector(routing, self._clock)
        new._current, new._busy, new._latency = self._current, self._busy, self._latency
        new._sessions, new._requests = self._sessions, self._requests
        return new

    def settings(self, model: str) -> Settings:
        return self._settings.get(model, self._default)

    def rank(self, model: str, units: Sequence[Unit], session: str | None = None) -> list[Unit]:
        """The units a request for ``model`` should try first, best first (``units``: the healthy
        units of its own targets, in the rotation's order)."""
        settings = self.settings(model)
        ranked: list[Unit] = []
        if settings.affinity == "session" and session is not None:
            stuck = self._sessions.get(session)
            if stuck is not None and stuck in units:
                self._sessions.move_to_end(session)
                ranked.append(stuck)
        if settings.strategy == "weighted":
            ranked += self._weighted(model, settings, units)
        elif settings.strategy == "least-busy":
            ranked += sorted(units, key=lambda u: self._busy.get(u, 0))
        elif settings.strategy == "latency":
            ranked += self._fastest(units)
        return list(dict.fromkeys(ranked))

    def _weighted(self, model: str, settings: Settings, units: Sequence[Unit]) -> list[Unit]:
        """Smooth weighted round robin over the healthy units: the chosen one first, the others by
        weight (a retry goes to the next heaviest)."""
        current = self._current.setdefault(model, {})
        weights = {u: settings.weight(u) for u in units}
        total = sum(weights.values())
        if total <= 0:
            return list(units)
        for unit, weight in weights.items():
            current[unit] = current.get(unit, 0.0) + weight
        chosen = max(units, key=lambda u: current[u])
        current[chosen] -= total
        rest = sorted((u for u in units if u != chosen), key=lambda u: -weights[u])
        return [chosen, *(u for u in rest if weights[u] > 0)]

    def _fastest(self, units: Sequence[Unit]) -> list[Unit]:
        self._requests += 1
        unknown = [u for u in units if u not in self._latency]
        known = sorted((u for u in units if u in self._latency), key=lambda u: self._latency[u][0])
        if not unknown and len(known) > 1 and self._requests % EXPLORE_EVERY == 0:
            stalest = min(known, key=lambda u: self._latency[u][1])
            return [stalest, *known]
        return [*unknown, *known]

    def started(self, unit: Unit) -> Callable[[], None]:
        """A request went to ``unit``; the callable returned says it ended."""
        self._busy[unit] = self._busy.get(unit, 0) + 1

        def ended() -> None:
            left = self._busy.get(unit, 1) - 1
            if left > 0:
                self._busy[unit] = left
            else:
                self._busy.pop(unit, None)

        return ended

    def busy(self, unit: Unit) -> int:
        return self._busy.get(unit, 0)

    def answered(self, unit: Unit, seconds: float) -> None:
        """``unit`` gave its first byte after ``seconds``."""
        now = self._clock()
        before = self._latency.get(unit)
        average = seconds if before is None else ALPHA * seconds + (1 - ALPHA) * before[0]
        self._latency[unit] = (average, now)

    def latency(self, unit: Unit) -> float | None:
        known = self._latency.get(unit)
        return None if known is None else known[0]

    def remember(self, model: str, session: str | None, unit: Unit) -> None:
        """``unit`` answered ``session``: its next requests start there (with affinity on)."""
        if session is None or self.settings(model).affinity != "session":
            return
        self._sessions[session] = unit
        self._sessions.move_to_end(session)
        while len(self._sessions) > self._routing.affinity_size:
            self._sessions.popitem(last=False)

    def session_unit(self, session: str) -> Unit | None:
        return self._sessions.get(session)

    def learn(self, model: str, session: str, label: str) -> None:
        """Another instance last answered ``session`` with the key ``label`` (``provider#N``)."""
        name, _, number = label.rpartition("#")
        if number.isdigit() and int(number) >= 1:
            self.remember(model, session, (name, int(number) - 1))

    def sessions(self) -> Iterable[tuple[str, Unit]]:
        return self._sessions.items()
