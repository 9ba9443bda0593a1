"""``GET /metrics``: Prometheus text, summed over every worker of one ``proxycast serve``.

prometheus-client's multiprocess mode does the summing: with ``--workers N`` the parent sets
``PROMETHEUS_MULTIPROC_DIR`` before starting the workers, each worker's values live in memory-mapped
files there, and whichever worker answers the scrape reads them all. One worker (or an embedding
program) keeps its values in its own registry. Label values are bounded by the configuration: a
client, model, provider or key it does not name is counted under ``other``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from proxycast.accounting.clients import UNNAMED

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from prometheus_client import Metric

    from proxycast.config import Config
    from proxycast.upstream.keys import KeyPool, Left

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, float("inf"))


class Metrics:
    """The gateway's metrics (their names and labels: ``docs/operations.md``, "Metrics, health,
    request ids, access log")."""

    def __init__(self, config: Config) -> None:
        self.runtime_clients: frozenset[str] = frozenset()
        """The names of the runtime client keys (``proxycast keys``): labels too."""
        self._dir = os.environ.get(MULTIPROCESS_VARIABLE) or None
        # in multiprocess mode the values go to files and the scrape reads the files, so the metric
        # objects must not be registered as well (they would be counted twice)
        own = None if self._dir else CollectorRegistry()
        self._registry = own
        self.requests = Counter(
            "proxycast_requests",
            "Requests answered, by client, model, provider and status.",
            ["client", "model", "provider", "status"],
            registry=own,
        )
        self.tokens = Counter(
            "proxycast_tokens",
            "Tokens used (type: input, output, cache_read, cache_write, reasoning).",
            ["client", "model", "provider", "type"],
            registry=own,
        )
        self.cost = Counter(
            "proxycast_cost_usd",
            "USD spent, by the [prices] table.",
            ["client", "model", "provider"],
            registry=own,
        )
        self.duration = Histogram(
            "proxycast_request_duration_seconds",
            "Seconds from the request to the end of its answer.",
            ["model", "provider"],
            buckets=_BUCKETS,
            registry=own,
        )
        self.ttft = Histogram(
            "proxycast_time_to_first_token_seconds",
            "Seconds from the request to the first byte of its answer's body (first content).",
            ["model", "provider"],
            buckets=_BUCKETS,
            registry=own,
        )
        self.attempts = Counter(
            "proxycast_upstream_attempts",
            "Upstream attempts, by provider, key label and outcome.",
            ["provider", "key", "outcome"],
            registry=own,
        )
        self.key_available = Gauge(
            "proxycast_key_available",
            "1 when the provider key is in rotation, 0 while it sits out.",
            ["provider", "key"],
            registry=own,
            multiprocess_mode="livemin",
        )
        self.key_remaining = Gauge(
            "proxycast_key_remaining",
            "What the last answer's rate-limit headers said is left of a provider key "
            "(kind: requests, tokens).",
            ["provider", "key", "kind"],
            registry=own,
            multiprocess_mode="livemostrecent",
        )
        self.redis_calls: Counter | None = None
        self.redis_up: Gauge | None = None
        if config.state.redis_url:  # only where there is a Redis to watch
            self.redis_calls = Counter(
                "proxycast_redis_calls",
                "Calls to Redis, one round trip each (what: admit, settle, sync, replay, ping).",
                ["what"],
                registry=own,
            )
            self.redis_up = Gauge(
                "proxycast_redis_up",
                "1 while every worker reaches Redis ([state] redis_url), 0 while one does not.",
                registry=own,
                multiprocess_mode="livemin",
            )
        self.in_flight = Gauge(
            "proxycast_in_flight_requests",
            "Requests in progress (the dashboard's live stream, /ui/api/live, left out).",
            registry=own,
            multiprocess_mode="livesum",
        )
        self.reloads = Counter(
            "proxycast_reloads",
            "Configuration reloads (result: ok, invalid: the file was refused, failed).",
            ["result"],
            registry=own,
        )
        self.overload_state = Gauge(
            "proxycast_overload_state",
            "The overload manager's state ([server] max_memory_mb): 0 normal, 1 shedding "
            "streams, 2 shedding all (the highest of the workers).",
            registry=own,
            multiprocess_mode="livemax",
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.bound(config)

    def bound(self, config: Config) -> None:
        """Take the label values the configuration names (at start, and at each reload); any
        other is counted under ``other``."""
        self.clients = frozenset([UNNAMED, *(c.name for c in config.clients)])
        self.providers = frozenset(p.name for p in config.providers)
        self.models = frozenset(
            [
                *(m for p in config.providers for m in p.models if not _glob(m)),
                *config.aliases,
                *(m for m in config.fallbacks if m != "*"),
            ]
        )
        self.keys = frozenset(
            f"{p.name}#{i + 1}" for p in config.providers for i in range(max(1, len(p.api_keys)))
        )

    def watch_quotas(self, pools: Mapping[str, KeyPool]) -> None:
        """Keep ``proxycast_key_remaining`` up to date with what each answer of these providers
        says is left of its key: set as the answer arrives (the last any worker received wins,
        ``livemostrecent``), not at a scrape (the worker answering it may have seen none)."""
        for name, pool in pools.items():
            pool.watcher = self._quota_watcher(name, pool)

    def _quota_watcher(
        self, provider: str, pool: KeyPool
    ) -> Callable[[int, Left | None, Left | None], None]:
        def told(index: int, requests: Left | None, tokens: Left | None) -> None:
            label = self.key(pool.label(index))
            if requests is not None:
                self.child(self.key_remaining, provider, label, "requests").set(requests.remaining)
            if tokens is not None:
                self.child(self.key_remaining, provider, label, "tokens").set(tokens.remaining)

        return told

    def child(self, metric: Counter | Gauge | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label values: ``labels()`` validates
        and locks on every call, several times per request."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def client(self, name: str) -> str:
        return name if name in self.clients or name in self.runtime_clients else OTHER

    def model(self, name: str) -> str:
        return name if name in self.models else OTHER

    def provider(self, name: str) -> str:
        return name if not name or name in self.providers else OTHER

    def key(self, label: str) -> str:
        return label if label in self.keys else OTHER

    def exposition(self) -> bytes:
        """The Prometheus text of every worker."""
        return generate_latest(self._scraped())

    def collect(self) -> Iterable[Metric]:
        """The current values of every worker (the dashboard reads the attempts per key)."""
        return self._scraped().collect()

    def _scraped(self) -> CollectorRegistry:
        if self._registry is not None:
            return self._registry
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self._dir)  # type: ignore[no-untyped-call]
        return registry


def _glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")
