"""Prometheus metrics, one registry per app, rendered by prometheus-client.

Counters and histograms count what this process did; the queue depth is read from the shared
store at scrape time, so it is right whichever worker answers the scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)
ACCEPT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            "gateway_jobs_accepted",
            "Async requests stored and answered 202",
            ["route"],
            registry=r,
        )
        self.ended = Counter(
            "gateway_jobs_ended",
            "Jobs that reached a final state",
            ["route", "outcome"],
            registry=r,
        )
        self.queued = Gauge(
            "gateway_jobs_queued",
            "Jobs waiting for an upstream slot (from storage)",
            ["upstream"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gateway_upstream_in_flight",
            "Calls to the upstream under way in this process",
            ["upstream"],
            registry=r,
        )
        self.upstream_latency = Histogram(
            "gateway_upstream_latency_seconds",
            "One try with the upstream, to its last byte",
            ["upstream"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.accept_latency = Histogram(
            "gateway_accept_latency_seconds",
            "From request to durable 202",
            buckets=ACCEPT_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "gateway_upstream_retries",
            "Tries scheduled again after a failure or status",
            ["upstream"],
            registry=r,
        )
        self.commits = Histogram(
            "gateway_storage_commit_seconds",
            "One write transaction of this process, from its start to its commit being durable",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.committed = Counter(
            "gateway_storage_operations",
            "Writes grouped into those transactions (per transaction: the group commit's batch)",
            registry=r,
        )
        self.callbacks = Counter(
            "gateway_callbacks",
            "Callback deliveries by outcome",
            ["outcome"],
            registry=r,
        )

    def commit(self, operations: int, seconds: float) -> None:
        self.commits.observe(seconds)
        self.committed.inc(operations)

    def render(self, queued: dict[str, int]) -> bytes:
        for upstream, count in queued.items():
            self.queued.labels(upstream).set(count)
        return generate_latest(self.registry)
