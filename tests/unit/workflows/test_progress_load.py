"""The progress display's load table: each endpoint read with the gauges its entry names."""

from __future__ import annotations

import pytest

from nerschat.engine_metrics import TEI_METRICS, VLLM_METRICS
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet
from nerschat.testing.metrics_page import MetricsPage
from nerschat.workflows.progress import endpoint_load
from tests.conftest import make_endpoint


@pytest.mark.slow  # two stub pilots
def test_rows_of_tei_and_vllm_stubs_and_an_entry_without_names(fleet: StubFleet,
                                                                registry: Registry) -> None:
    pilots = fleet.start("e", kind="embedding"), fleet.start("e", kind="embedding", api="tei")
    vllm, tei = (fleet.wait_ready(p) for p in pilots)
    # A server that names no load metrics (an engine nerschat knows nothing about): its
    # metrics are not guessed from the engine's name, even where they answer vLLM's names.
    registry.publish(make_endpoint(id="unnamed", model="e", kind="embedding", engine="vllm",
                                   metrics_url=vllm.metrics_url))
    rows = dict(endpoint_load(registry, "e", "embedding"))
    assert rows == {vllm.id: "0 running, 0 waiting", tei.id: "0 waiting",
                    "unnamed": "no load metrics"}


def test_rows_show_the_named_gauges_and_unreachable_servers(registry: Registry) -> None:
    vllm_text = ('vllm:num_requests_running{engine="0",model_name="m1"} 3\n'
                 'vllm:num_requests_waiting{engine="0",model_name="m1"} 12\n'
                 'te_queue_size 99\n')
    with MetricsPage(vllm_text) as vllm, MetricsPage("te_queue_size 7\n") as tei:
        registry.publish(make_endpoint(id="v", metrics_url=vllm.url,
                                       load_metrics=VLLM_METRICS.load_metrics()))
        registry.publish(make_endpoint(id="t", engine="tei", metrics_url=tei.url,
                                       load_metrics=TEI_METRICS.load_metrics()))
        registry.publish(make_endpoint(id="gone", metrics_url="http://127.0.0.1:9/metrics",
                                       load_metrics=TEI_METRICS.load_metrics()))
        rows = dict(endpoint_load(registry, "m1", "llm"))
    assert rows == {"v": "3 running, 12 waiting", "t": "7 waiting", "gone": "unreachable"}
