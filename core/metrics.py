"""Prometheus metrics of one server (prometheus-client, a registry per app so servers never share series).

Why this module exists: operators paying for idle GPUs watch request rates, latency, cold loads and
the window each experiment holds; `/metrics` exposes them in the format their scrapers read.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

disable_created_metrics()  # the *_created series only add noise to every scrape

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServerMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hybrid_requests", "Predict requests by experiment and HTTP status.", ["experiment", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "hybrid_request_latency_seconds", "End-to-end predict latency.", ["experiment"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.cold_loads = Counter(
            "hybrid_cold_loads", "Requests that waited for a model load.", ["experiment"], registry=self.registry
        )
        self.load_seconds = Histogram(
            "hybrid_model_load_seconds", "Time requests spent waiting for a model load.", ["experiment"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.cached_models = Gauge("hybrid_cached_models", "Models loaded in the cache.", registry=self.registry)
        self.window = Gauge(
            "hybrid_scaledown_window_seconds", "Scaledown window currently decided per experiment.", ["experiment"],
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "hybrid_cold_starts", "Container/replica cold starts by experiment.", ["experiment"], registry=self.registry
        )
        self.cold_start_seconds = Histogram(
            "hybrid_cold_start_seconds", "Cold start duration by experiment and phase (replica_start, model_load).",
            ["experiment", "phase"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.replicas = Gauge("hybrid_replicas", "Running replicas per experiment.", ["experiment"], registry=self.registry)
        #: The cost ledger's totals since it started, by experiment and container state.
        self.usage = UsageCollector()
        self.registry.register(self.usage)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class UsageCollector(Collector):
    """The cost ledger as Prometheus counters: container-seconds and their cost since the ledger started,
    by experiment and state (cold_start, busy, warm_idle, prewarmed). Refreshed at each scrape."""

    def __init__(self) -> None:
        self._totals: dict[str, dict[str, float]] = {}
        self._per_second: dict[str, float | None] = {}

    def update(self, totals: dict[str, dict[str, float]], per_second: dict[str, float | None]) -> None:
        """`totals`: experiment → state → container-seconds; `per_second`: each experiment's price (None: unknown)."""
        self._totals, self._per_second = totals, per_second

    def collect(self) -> Iterator[Metric]:
        seconds = CounterMetricFamily("hybrid_container_seconds", "Container-seconds by experiment and state "
                                      "(cost ledger, since it started).", labels=["experiment", "state"])
        cost = CounterMetricFamily("hybrid_container_cost_usd", "Cost of those container-seconds in US dollars "
                                   "(HYBRID_COST_GPU / HYBRID_COST_PER_S).", labels=["experiment", "state"])
        for experiment_id, by_state in sorted(self._totals.items()):
            price = self._per_second.get(experiment_id)
            for state, value in by_state.items():
                seconds.add_metric([experiment_id, state], value)
                if price is not None:
                    cost.add_metric([experiment_id, state], value * price)
        yield seconds
        yield cost
