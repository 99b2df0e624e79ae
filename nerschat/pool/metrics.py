"""Backlog of an endpoint from its Prometheus `/metrics` (vLLM's request gauges)."""

from __future__ import annotations

import re

import httpx2

from nerschat.registry import Endpoint

_GAUGE = re.compile(r"^(vllm:num_requests_(?:waiting|running))(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$",
                    re.MULTILINE)


def parse_backlog(text: str) -> tuple[float, float]:
    """`(waiting, running)` summed over the lines of a /metrics page (0 if absent)."""
    totals = {"vllm:num_requests_waiting": 0.0, "vllm:num_requests_running": 0.0}
    for name, value in _GAUGE.findall(text):
        try:
            totals[name] += float(value)
        except ValueError:
            continue
    return totals["vllm:num_requests_waiting"], totals["vllm:num_requests_running"]


def backlog(endpoint: Endpoint, timeout: float = 2.0) -> tuple[float, float] | None:
    """`(waiting, running)` requests of one endpoint; None when /metrics does not answer."""
    base = endpoint.url.rstrip("/").removesuffix("/v1")
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    try:
        reply = httpx2.get(f"{base}/metrics", headers=headers, timeout=timeout)
    except httpx2.HTTPError:
        return None
    if reply.status_code != 200:
        return None
    return parse_backlog(reply.text)
