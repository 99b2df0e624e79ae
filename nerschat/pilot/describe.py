"""What clients need to know about an engine: its limits (asked from it), and its phase.

`describe_phase` puts a registry entry's phase in words for `nerschat ls` and `nerschat
wait`: the queued job and SLURM's reason for a `pending` entry, the node, the time since the
start and the server log's last line for a `starting` one.

TEI describes its limits at `/info` (`max_client_batch_size`, `max_batch_tokens`,
`max_input_length`); vLLM lists `max_model_len` per model at `/v1/models`. The result is a
set of registry Endpoint fields (`api`, `max_batch_size`, `max_batch_tokens`,
`max_input_tokens`, `max_model_len`, `metrics_url`, and `load_metrics` from the engine's
recipe) the pilot publishes with the ready state, so clients never probe or guess the engine.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import httpx2

LOG_LINE_CHARS = 120
"""A starting pilot's last log line is cut to this many characters in a phase description."""

if TYPE_CHECKING:
    from nerschat.engine_metrics import MetricNames
    from nerschat.registry import Endpoint
    from nerschat.slurm import QueuedJob


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def describe_engine(base_url: str, api_key: str | None, public_url: str | None = None,
                    timeout: float = 5.0, *, metrics_path: str | None = "/metrics",
                    metrics: MetricNames | None = None) -> dict[str, Any]:
    """Endpoint fields for the server probed at `base_url` (`http://host:port`, no /v1).

    `public_url` is the same server as clients reach it; `metrics_path` where its
    Prometheus text is (for `metrics_url`; None: nowhere), `metrics` the names the engine's
    recipe declares (their load gauges become `load_metrics`).

    Never raises: a field the engine does not describe is left out.
    """
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    fields: dict[str, Any] = {}
    if metrics_path is not None:
        fields["metrics_url"] = f"{public_url or base_url}{metrics_path}"
        if metrics is not None:
            fields["load_metrics"] = metrics.load_metrics()
    try:
        with httpx2.Client(timeout=timeout, headers=headers) as http:
            info = http.get(f"{base_url}/info")
            data = info.json() if info.status_code == 200 else None
            if isinstance(data, dict) and "max_client_batch_size" in data:
                fields.update(api="tei", max_batch_size=_int(data.get("max_client_batch_size")),
                              max_batch_tokens=_int(data.get("max_batch_tokens")),
                              max_input_tokens=_int(data.get("max_input_length")))
                return {k: v for k, v in fields.items() if v is not None}
            fields["api"] = "openai"
            models = http.get(f"{base_url}/v1/models")
            listed = models.json().get("data") if models.status_code == 200 else None
            if isinstance(listed, list) and listed and isinstance(listed[0], dict):
                length = _int(listed[0].get("max_model_len"))
                fields.update(max_model_len=length, max_input_tokens=length)
    except (httpx2.HTTPError, ValueError, AttributeError):
        pass
    return {k: v for k, v in fields.items() if v is not None}


def describe_phase(entry: Endpoint, now: float | None = None,
                   queue: Mapping[str, QueuedJob] | None = None,
                   log_line: str | None = None) -> str:
    """One line on where a pilot is in its life; "" for a plain `ready` entry.

    `queue` is what `nerschat.slurm.queued_jobs` answered for the entries' jobs (None: SLURM
    could not be asked); `log_line` the server log's last line (`server_log.last_line`).

    - pending: `job 4242 pending: waiting for nodes to become free (Resources), expected
      start 2026-12-01 10:00 (in 25m)`; `job 4242 left the queue without starting its
      pilot` when SLURM no longer has it; `job 4242 queued (not started yet)` when SLURM
      cannot be asked.
    - starting: `for 42 s on nid001234: <last log line>`.
    - draining / unhealthy: on which node, for the record.
    """
    now = time.time() if now is None else now
    job = entry.slurm_job_id
    if entry.state == "pending":
        if not job:
            return "queued as a local process (not started yet)"
        if queue is None:
            return f"job {job} queued (not started yet)"
        queued = queue.get(job)
        if queued is None:
            return f"job {job} left the queue without starting its pilot ('nerschat ls --prune')"
        if queued.state == "PENDING":
            return queued.describe(now)
        return f"job {job} {queued.state.lower()}" + (
            f" on {queued.nodes}" if queued.nodes else "") + ", pilot not started yet"
    if entry.state == "starting":
        since = f"for {max(0.0, now - entry.started_at):.0f} s " if entry.started_at else ""
        text = f"{since}on {entry.host}"
        if log_line and len(log_line) > LOG_LINE_CHARS:
            log_line = log_line[:LOG_LINE_CHARS - 3] + "..."
        return f"{text}: {log_line}" if log_line else text
    if entry.state in ("draining", "unhealthy"):
        return f"{entry.state} on {entry.host}"
    return ""
