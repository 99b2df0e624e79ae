"""The router's Prometheus text: per model/route requests, per endpoint load and failures."""

from __future__ import annotations

from nerschat.router.core import EndpointView
from nerschat.router.metrics import RouterMetrics


def test_counters_and_pool_gauges_render() -> None:
    metrics = RouterMetrics()
    views = [EndpointView("m1.a", "m1", in_flight=3, failures=0, ejected=False),
             EndpointView("m1.b", "m1", in_flight=0, failures=2, ejected=True)]
    metrics.watch_pool(lambda: views)
    metrics.answered("m1", "/v1/chat/completions", 200, 0.02)
    metrics.answered("m1", "/v1/chat/completions", 503, 0.5)
    metrics.answered("m1", "/v1/chat/completions", 200, 0.5, broken=True)
    metrics.upstream_failed("m1.b", "m1")
    metrics.upstream_answered("m1.a", "m1", 0.01)
    lines = metrics.render().decode().splitlines()
    route = 'model="m1",route="/v1/chat/completions"'
    assert f'nerschat_router_requests_total{{{route},status="200"}} 2.0' in lines
    assert f"nerschat_router_request_errors_total{{{route}}} 2.0" in lines
    assert f"nerschat_router_request_seconds_count{{{route}}} 3.0" in lines
    assert 'nerschat_router_in_flight{endpoint="m1.a",model="m1"} 3.0' in lines
    assert 'nerschat_router_ejected{endpoint="m1.b",model="m1"} 1.0' in lines
    assert 'nerschat_router_failovers_total{endpoint="m1.b",model="m1"} 1.0' in lines
    assert 'nerschat_router_ejections_total{endpoint="m1.b",model="m1"} 1.0' in lines
    assert 'nerschat_router_upstream_seconds_count{endpoint="m1.a",model="m1"} 1.0' in lines


def test_two_routers_in_one_process_keep_separate_counts() -> None:
    first, second = RouterMetrics(), RouterMetrics()
    first.answered("m", "/v1/completions", 200, 0.1)
    assert b"nerschat_router_requests_total{" not in second.render()
