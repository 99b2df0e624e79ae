"""Engines' metric names and the one reader of Prometheus text (nerschat.engine_metrics)."""

from __future__ import annotations

import pytest

from nerschat.engine_metrics import (
    MAX_BODY,
    TEI_METRICS,
    VLLM_METRICS,
    Backlog,
    MetricNames,
    backlog_in,
    parse_samples,
    read_backlog,
)
from nerschat.testing.metrics_page import MetricsPage
from tests.conftest import make_endpoint

# As vLLM 0.x's V1 engine exports them (two engine cores, one model), trimmed.
VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_waiting{engine="1",model_name="m"} 5.0
vllm:num_requests_waiting_by_reason{engine="0",model_name="m",reason="capacity"} 99.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="m"} 1200.0
vllm:generation_tokens_created{engine="0",model_name="m"} 1.7646e+09
vllm:prompt_tokens_total{engine="0",model_name="m"} 300.0
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 7.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1.0
"""

# As text-embeddings-inference 1.9 exports them (metrics-exporter-prometheus), trimmed.
TEI_TEXT = """\
# TYPE te_request_count counter
te_request_count{method="batch"} 14
# TYPE te_request_success counter
te_request_success{method="batch"} 12
te_request_success{method="single"} 4
# TYPE te_embed_success counter
te_embed_success 400
# TYPE te_queue_size gauge
te_queue_size 37
# TYPE te_batch_next_size histogram
te_batch_next_size_bucket{le="1"} 0
te_batch_next_size_bucket{le="+Inf"} 16
te_batch_next_size_sum 400
te_batch_next_size_count 16
"""


def test_vllm_gauges_and_counters_sum_over_label_sets() -> None:
    assert parse_samples(VLLM_TEXT, VLLM_METRICS.load) == {
        "vllm:num_requests_running": 4.0, "vllm:num_requests_waiting": 7.0}
    assert sum(parse_samples(VLLM_TEXT, VLLM_METRICS.progress).values()) == 1508.0
    assert backlog_in(VLLM_TEXT, VLLM_METRICS) == Backlog(running=4.0, waiting=7.0)


def test_tei_queue_and_counters() -> None:
    assert backlog_in(TEI_TEXT, TEI_METRICS) == Backlog(running=None, waiting=37.0)
    assert parse_samples(TEI_TEXT, TEI_METRICS.progress) == {
        "te_request_success": 16.0, "te_embed_success": 400.0}
    # vLLM's names find nothing on a TEI page, and the other way round.
    assert parse_samples(TEI_TEXT, VLLM_METRICS.load) == {}
    assert parse_samples(VLLM_TEXT, TEI_METRICS.load) == {}


def test_nan_infinities_and_garbage_lines_are_skipped() -> None:
    text = "\n".join([
        'te_queue_size NaN',
        'te_queue_size{shard="1"} +Inf',
        'te_queue_size{shard="2"} 3',
        'te_queue_size{shard="3"} 4 1764600000000',  # with a timestamp
        'te_queue_size{path="a}b",x="q\\"uote"} 1',  # '}' and an escaped quote in values
        'te_queue_size{broken 7',
        'te_queue_size 1,5',
        'te_queue_size',
        'te_queue_size 0x10',
        'te_queue_size_total 100',
        '<html><body>te_queue_size 50</body></html>',
        '\x00\xff te_queue_size 9',
        '',
        '# te_queue_size 1000',
    ])
    assert parse_samples(text, ["te_queue_size"]) == {"te_queue_size": 8.0}
    assert parse_samples("te_queue_size NaN\n", ["te_queue_size"]) == {}
    assert parse_samples("x 1e308\nx 1e308\n", ["x"]) == {}  # overflows: unknown, not inf
    assert parse_samples("<html>oops</html>", ["te_queue_size"]) == {}


def test_absent_or_negative_gauges_count_zero_in_a_backlog() -> None:
    # TEI shows te_queue_size only once something was queued.
    assert backlog_in("te_request_count 0\n", TEI_METRICS) == Backlog(None, 0.0)
    assert backlog_in("vllm:num_requests_waiting -4\n", VLLM_METRICS) == Backlog(0.0, 0.0)


def test_names_must_be_prometheus_names() -> None:
    with pytest.raises(ValueError, match="not a Prometheus metric name"):
        MetricNames(waiting="queue size")
    with pytest.raises(ValueError, match="not a Prometheus metric name"):
        MetricNames(waiting="q", progress=("9lives",))
    assert VLLM_METRICS.load_metrics() == {"running": "vllm:num_requests_running",
                                           "waiting": "vllm:num_requests_waiting"}
    assert TEI_METRICS.load_metrics() == {"waiting": "te_queue_size"}


def test_names_of_an_entry() -> None:
    named = make_endpoint(load_metrics={"waiting": "te_queue_size"})
    assert MetricNames.of(named) == MetricNames(waiting="te_queue_size")
    assert MetricNames.of(make_endpoint()) is None
    assert MetricNames.of(make_endpoint(load_metrics={"running": "r"})) is None


def test_read_backlog_uses_the_entry_names_url_and_key() -> None:
    with MetricsPage(TEI_TEXT) as page:
        entry = make_endpoint(metrics_url=page.url, load_metrics=TEI_METRICS.load_metrics())
        assert read_backlog(entry) == Backlog(None, 37.0)
        assert page.headers[-1]["Authorization"] == "Bearer secret"
        assert page.headers[-1]["Accept-Encoding"] == "identity"
        vllm_named = make_endpoint(metrics_url=page.url,
                                   load_metrics=VLLM_METRICS.load_metrics())
        assert read_backlog(vllm_named) == Backlog(0.0, 0.0)
        seen = len(page.headers)
        assert read_backlog(make_endpoint(metrics_url=page.url)) is None  # no names: no guess
        assert read_backlog(make_endpoint(load_metrics={"waiting": "te_queue_size"})) is None
        assert len(page.headers) == seen  # neither was fetched


def test_read_backlog_refuses_redirects_errors_and_huge_pages() -> None:
    with MetricsPage(TEI_TEXT) as page, MetricsPage(TEI_TEXT) as elsewhere:
        entry = make_endpoint(metrics_url=page.url, load_metrics={"waiting": "te_queue_size"})
        page.location = elsewhere.url
        assert read_backlog(entry) is None
        assert elsewhere.headers == []  # the redirect was not followed
        page.location = None
        page.status = 500
        assert read_backlog(entry) is None
        page.status = 200
        page.text = "te_queue_size 1\n" + "#" * MAX_BODY
        assert read_backlog(entry) is None
    assert read_backlog(entry, timeout=0.5) is None  # nobody listens any more
