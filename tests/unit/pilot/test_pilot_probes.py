"""The pilot's probes of its own server: port, ownership in /proc, load from metrics."""

from __future__ import annotations

import os
import socket

from nerschat.pilot.probes import (
    parse_load,
    parse_progress,
    port_in_use,
    socket_owned_by_session,
)

VLLM_METRICS = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
vllm:num_requests_running{engine="1",model_name="m"} 1.0
vllm:num_requests_waiting{engine="0",model_name="m"} 2.0
vllm:num_requests_swapped{engine="0",model_name="m"} 9.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5
"""


def test_load_sums_running_and_waiting_over_label_sets() -> None:
    assert parse_load(VLLM_METRICS) == 6


def test_load_of_an_idle_server_is_zero_and_unknown_without_metrics() -> None:
    assert parse_load("vllm:num_requests_running 0\nvllm:num_requests_waiting 0\n") == 0
    assert parse_load("te_queue_size 4\n") == 4
    assert parse_load("") is None
    assert parse_load("<html>not metrics</html>") is None


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
    text = VLLM_METRICS + (
        'vllm:generation_tokens_total{engine="0",model_name="m"} 100.0\n'
        'vllm:prompt_tokens_total{engine="0",model_name="m"} 50.0\n'
        'vllm:generation_tokens_created{engine="0",model_name="m"} 1.7e9\n')
    assert parse_progress(text) == 150.0
    assert parse_progress(VLLM_METRICS) is None
