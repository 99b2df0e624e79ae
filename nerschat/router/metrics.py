"""The router's Prometheus metrics (text format at `/metrics`).

Per request (labels `model`, `route`): `nerschat_router_requests_total{status}`,
`nerschat_router_request_errors_total` (status >= 500 or a broken stream) and the
`nerschat_router_request_seconds` histogram (first byte in to last byte out).
Per upstream endpoint (labels `endpoint`, `model`): `..._upstream_seconds` (time to the
answer's headers), `..._failovers_total`, `..._ejections_total`, and, read from the routing
pool at scrape time, `..._in_flight` and `..._ejected` (1 while cooling down).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class EndpointState(Protocol):
    """What the pool collector reads of one upstream endpoint."""

    @property
    def id(self) -> str:
        """Endpoint id."""

    @property
    def model(self) -> str:
        """Served model name."""

    @property
    def in_flight(self) -> int:
        """Requests outstanding there."""

    @property
    def ejected(self) -> bool:
        """True while it cools down after failures."""


class _PoolCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[EndpointState]]):
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_flight = GaugeMetricFamily("nerschat_router_in_flight",
                                      "Requests outstanding per upstream endpoint",
                                      labels=["endpoint", "model"])
        ejected = GaugeMetricFamily("nerschat_router_ejected",
                                    "1 while an upstream endpoint is cooling down after failures",
                                    labels=["endpoint", "model"])
        for state in self.read():
            in_flight.add_metric([state.id, state.model], state.in_flight)
            ejected.add_metric([state.id, state.model], 1.0 if state.ejected else 0.0)
        yield in_flight
        yield ejected


class RouterMetrics:
    """Counters for one router; its own Prometheus registry (several routers per process ok)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("nerschat_router_requests", "Requests answered",
                                ["model", "route", "status"], registry=self.registry)
        self.errors = Counter("nerschat_router_request_errors",
                              "Requests answered with 5xx or cut off mid-answer",
                              ["model", "route"], registry=self.registry)
        self.latency = Histogram("nerschat_router_request_seconds",
                                 "Request latency through the router, to the last byte",
                                 ["model", "route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.upstream_latency = Histogram("nerschat_router_upstream_seconds",
                                          "Time to an upstream answer's headers",
                                          ["endpoint", "model"], buckets=LATENCY_BUCKETS,
                                          registry=self.registry)
        self.failovers = Counter("nerschat_router_failovers",
                                 "Failed upstream attempts handed to another replica (or given up)",
                                 ["endpoint", "model"], registry=self.registry)
        self.ejections = Counter("nerschat_router_ejections",
                                 "Times an upstream endpoint was taken out of rotation to cool down",
                                 ["endpoint", "model"], registry=self.registry)

    def watch_pool(self, read: Callable[[], Iterable[EndpointState]]) -> None:
        """Export per-endpoint in-flight and ejected gauges, read when scraped."""
        self.registry.register(_PoolCollector(read))

    def answered(self, model: str, route: str, status: int, seconds: float,
                 broken: bool = False) -> None:
        """Count one answered request (`broken`: cut off mid-answer)."""
        self.requests.labels(model, route, str(status)).inc()
        if status >= 500 or broken:
            self.errors.labels(model, route).inc()
        self.latency.labels(model, route).observe(seconds)

    def upstream_answered(self, endpoint: str, model: str, seconds: float) -> None:
        """Time to an upstream answer's headers."""
        self.upstream_latency.labels(endpoint, model).observe(seconds)

    def upstream_failed(self, endpoint: str, model: str) -> None:
        """Count a failed attempt: a fail-over, and an ejection of that endpoint."""
        self.failovers.labels(endpoint, model).inc()
        self.ejections.labels(endpoint, model).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
