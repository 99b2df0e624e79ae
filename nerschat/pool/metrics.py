"""Backlog of an endpoint for the pool controller, from the gauges its entry names."""

from __future__ import annotations

from nerschat.engine_metrics import read_backlog
from nerschat.registry import Endpoint


def backlog(endpoint: Endpoint, timeout: float = 2.0) -> tuple[float, float] | None:
    """`(waiting, running)` requests of one endpoint, read from its entry's `metrics_url`.

    With the gauges named in its `load_metrics` (`nerschat.engine_metrics.read_backlog`); an
    engine without a running gauge counts 0 running. None when the entry names no load
    gauges or its metrics do not answer.
    """
    read = read_backlog(endpoint, timeout)
    if read is None:
        return None
    return read.waiting, read.running or 0.0
