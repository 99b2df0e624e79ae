"""The pool's backlog reading: (waiting, running) from the gauges an entry names."""

from __future__ import annotations

from nerschat.engine_metrics import TEI_METRICS, VLLM_METRICS
from nerschat.pool.metrics import backlog
from nerschat.testing.metrics_page import MetricsPage
from tests.conftest import make_endpoint

PAGE = ('vllm:num_requests_waiting{engine="0",model_name="m1"} 3.0\n'
        'vllm:num_requests_waiting{engine="1",model_name="m1"} 2.0\n'
        'vllm:num_requests_running{model_name="m1"} 7\n'
        'vllm:num_requests_waiting_by_reason{reason="x"} 99\n'
        'te_queue_size 11\n')


def test_backlog_reads_the_gauges_the_entry_names() -> None:
    with MetricsPage(PAGE) as page:
        vllm = make_endpoint(metrics_url=page.url, load_metrics=VLLM_METRICS.load_metrics())
        tei = make_endpoint(metrics_url=page.url, load_metrics=TEI_METRICS.load_metrics())
        assert backlog(vllm) == (5.0, 7.0)
        assert backlog(tei) == (11.0, 0.0)  # TEI has no running gauge: counts 0
        assert backlog(make_endpoint(metrics_url=page.url)) is None  # names nothing
        page.status = 503
        assert backlog(vllm) is None
