"""What a pilot publishes about its engine: limits asked from it, and its metric names."""

from __future__ import annotations

import pytest

from nerschat.engine_metrics import TEI_METRICS, VLLM_METRICS, Backlog, read_backlog
from nerschat.pilot.describe import describe_engine
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet
from nerschat.testing.metrics_page import MetricsPage


def test_metrics_fields_come_from_the_recipe() -> None:
    with MetricsPage("") as page:  # answers no /info nor /v1/models: no limits
        base = page.url.removesuffix("/metrics")
        fields = describe_engine(base, "k", "http://node7:8000", timeout=2.0,
                                 metrics_path="/prom", metrics=TEI_METRICS)
        assert fields["metrics_url"] == "http://node7:8000/prom"
        assert fields["load_metrics"] == {"waiting": "te_queue_size"}
        unnamed = describe_engine(base, "k", timeout=2.0)
        assert unnamed["metrics_url"] == f"{base}/metrics" and "load_metrics" not in unnamed
        assert not {"metrics_url", "load_metrics"} & set(
            describe_engine(base, "k", timeout=2.0, metrics_path=None, metrics=VLLM_METRICS))


@pytest.mark.slow  # two stub pilots
def test_stub_pilots_publish_their_engines_metric_names(fleet: StubFleet,
                                                         registry: Registry) -> None:
    """An openai stub names vLLM's gauges, a TEI stub TEI's; both can be read by clients."""
    llm, tei = fleet.start("m1"), fleet.start("e1", kind="embedding", api="tei")
    llm_entry, tei_entry = fleet.wait_ready(llm), fleet.wait_ready(tei)
    assert llm_entry.load_metrics == {"running": "vllm:num_requests_running",
                                      "waiting": "vllm:num_requests_waiting"}
    assert tei_entry.load_metrics == {"waiting": "te_queue_size"}
    assert tei_entry.api == "tei" and tei_entry.metrics_url == \
        tei_entry.url.removesuffix("/v1") + "/metrics"
    assert read_backlog(llm_entry) == Backlog(0.0, 0.0)
    assert read_backlog(tei_entry) == Backlog(None, 0.0)
