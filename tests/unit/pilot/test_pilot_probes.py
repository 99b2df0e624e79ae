"""The pilot's probes of its own server: port, ownership in /proc, load from metrics."""

from __future__ import annotations

import os
import socket

from nerschat.engine_metrics import TEI_METRICS, VLLM_METRICS
from nerschat.pilot.probes import (
    LivenessMonitor,
    parse_load,
    parse_progress,
    port_in_use,
    socket_owned_by_session,
)
from nerschat.testing.fleet import wait_until
from nerschat.testing.metrics_page import MetricsPage

VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_swapped{engine="0",model_name="m"} 9.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
"""


def test_load_sums_running_and_waiting_over_label_sets() -> None:
    assert parse_load(VLLM_TEXT, VLLM_METRICS) == 6


def test_load_of_an_idle_server_is_zero_and_unknown_without_metrics() -> None:
    idle = "vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n"
    assert parse_load(idle, VLLM_METRICS) == 0
    assert parse_load("te_queue_size 4\n", TEI_METRICS) == 4
    # Each engine's own names only: TEI's queue is not vLLM's load, nor the other way round.
    assert parse_load("te_queue_size 4\n", VLLM_METRICS) is None
    assert parse_load(VLLM_TEXT, TEI_METRICS) is None
    assert parse_load("", VLLM_METRICS) is None
    assert parse_load("<html>not metrics</html>", TEI_METRICS) is None
    assert parse_load("te_queue_size NaN\n", TEI_METRICS) is None


def test_port_in_use_while_a_socket_listens_there() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)


def test_listening_socket_owner_by_session() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert socket_owned_by_session(port, os.getsid(0)) is True
        assert socket_owned_by_session(port, 2**22 + 12345) is False  # no such session
    assert socket_owned_by_session(port, os.getsid(0)) is None  # nothing listens now


def test_progress_sums_token_and_finished_request_counters() -> None:
    text = VLLM_TEXT + (
        'vllm:generation_tokens_total{engine="0",model_name="m"} 100.0\n'
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 50.0\n'
        'vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9\n')
    assert parse_progress(text, VLLM_METRICS) == 150.0
    assert parse_progress(VLLM_TEXT, VLLM_METRICS) is None
    tei = ('te_request_success{method="batch"} 3\nte_request_success{method="single"} 2\n'
           'te_embed_success 40\nte_request_count{method="batch"} 9\n')
    assert parse_progress(tei, TEI_METRICS) == 45.0
    assert parse_progress(tei, VLLM_METRICS) is None


def stalled_after(text: str, names: object) -> str:
    """The liveness monitor's last error after 10 probes of a page showing `text`.

    Probes are at least 0.05 s apart, so the 10th comes at least 0.45 s after the first:
    past the 0.2 s stall timeout.
    """
    with MetricsPage("") as health, MetricsPage(text) as metrics:
        monitor = LivenessMonitor(health.url, 0.05, 2.0, metrics_url=metrics.url,
                                  stall_timeout=0.2, names=names).start()  # type: ignore[arg-type]
        try:
            wait_until(lambda: monitor.health().probes >= 10, 30, "ten probes")
            return monitor.health().last_error
        finally:
            monitor.close()


def test_liveness_watches_the_engines_own_queue_and_counters() -> None:
    """A TEI server with a queue and still counters is stuck; under vLLM's names it is not."""
    stuck_tei = "te_queue_size 5\nte_embed_success 10\n"
    assert "5 request(s) in flight and no progress" in stalled_after(stuck_tei, TEI_METRICS)
    assert stalled_after(stuck_tei, VLLM_METRICS) == ""
    assert stalled_after(stuck_tei, None) == ""  # an engine that names nothing is not watched
