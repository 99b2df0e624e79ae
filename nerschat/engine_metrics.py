"""What an engine's Prometheus metrics mean, and the one reader of them.

Each engine names its own gauges of requests running and waiting and its counters that grow
while it makes progress (`MetricNames`); engine recipes declare them, pilots publish the
load gauges in their registry entry (`Endpoint.load_metrics`) and watch the progress counters
of their own server, and clients (the workflow progress display, the pool controller) read
an endpoint's backlog with `read_backlog` without knowing which engine serves it.

Names, from the engines' sources:

- vLLM (0.32, `vllm/v1/metrics/loggers.py`): gauges `vllm:num_requests_running` and
  `vllm:num_requests_waiting`; counters `vllm:generation_tokens`, `vllm:prompt_tokens`,
  `vllm:request_success`, which prometheus_client exports with a `_total` suffix (labelled
  by engine and model, `vllm:request_success_total` also by finished reason).
- Text Embeddings Inference (huggingface/text-embeddings-inference v1.9.3: `core/src/queue.rs`,
  `core/src/infer.rs`, `router/src/http/server.rs`, which serves `/metrics` on the API port
  without the key): the gauge `te_queue_size` (inputs queued for a batch: texts, not requests); the
  counters `te_embed_success`, `te_predict_success` (inputs done) and `te_request_success`
  (requests done, labelled `method="single"|"batch"`). TEI has no gauge of what is in the
  running batch, so its `running` is None. Its exporter shows a metric only once it was first
  touched: a fresh server has no `te_queue_size` line at all.

Everything read here comes from untrusted places (a registry entry anyone with write access
could have written, a server that may answer anything): the parser skips what it does not
understand, NaN and infinities count as absent, and a reply is read only up to `MAX_BODY`
bytes within the timeout, without following redirects.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import httpx2

from nerschat.registry import LOAD_METRIC_KEYS, PROMETHEUS_NAME

if TYPE_CHECKING:
    from nerschat.registry import Endpoint

MAX_BODY = 4 * 1024 * 1024
"""Bytes of a /metrics reply read at most (vLLM's page is about 100 KB); a longer one is refused."""

# name, optional {labels} (quoted values may hold '}' and escaped quotes), value, optional
# timestamp: one sample line of the Prometheus text exposition format.
_SAMPLE = re.compile(
    r'([a-zA-Z_:][a-zA-Z0-9_:]*)'
    r'(?:\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?'
    r'[ \t]+([-+]?(?:[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+\.|Inf|NaN))'
    r'(?:[ \t]+-?[0-9]+)?[ \t]*\r?'
)
_NAME_END = re.compile(r"[{ \t]")


@dataclass(frozen=True)
class MetricNames:
    """An engine's metric names: load gauges (requests) and progress counters.

    `waiting` is the gauge of requests (or, for TEI, inputs) queued; `running` the gauge of
    those being computed (None: the engine has none); `progress` counters that grow while
    the server makes progress (tokens computed, requests finished). ValueError if a name is
    not a Prometheus metric name.
    """

    waiting: str
    running: str | None = None
    progress: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in (self.waiting, self.running, *self.progress):
            if name is not None and PROMETHEUS_NAME.fullmatch(name) is None:
                raise ValueError(f"{name!r} is not a Prometheus metric name")

    @property
    def load(self) -> tuple[str, ...]:
        """The load gauges: `running` (if any) and `waiting`."""
        return (self.waiting,) if self.running is None else (self.running, self.waiting)

    def load_metrics(self) -> dict[str, str]:
        """The registry entry's `load_metrics` field: `{"running": ..., "waiting": ...}`."""
        names = {"waiting": self.waiting}
        if self.running is not None:
            names["running"] = self.running
        return names

    @classmethod
    def of(cls, endpoint: Endpoint) -> MetricNames | None:
        """The load gauges an entry publishes (no progress counters); None if it names none."""
        named = endpoint.load_metrics
        if not named or set(named) - set(LOAD_METRIC_KEYS) or "waiting" not in named:
            return None
        try:
            return cls(waiting=named["waiting"], running=named.get("running"))
        except (TypeError, ValueError):
            return None


VLLM_METRICS = MetricNames(
    running="vllm:num_requests_running",
    waiting="vllm:num_requests_waiting",
    progress=("vllm:generation_tokens_total", "vllm:prompt_tokens_total",
              "vllm:request_success_total"),
)
"""vLLM's names (and the stub's, which mimics vLLM)."""

TEI_METRICS = MetricNames(
    waiting="te_queue_size",
    progress=("te_embed_success", "te_predict_success", "te_request_success"),
)
"""Text Embeddings Inference's names: no gauge of the running batch."""


def parse_samples(text: str, names: Collection[str]) -> dict[str, float]:
    """`{name: value summed over its label sets}` for each of `names` in Prometheus text.

    A name with no sample (or only NaN or infinite ones, or whose sum overflows) is left out. Comment lines, other
    metrics, and lines that are not samples are skipped; this never raises for bad text.
    """
    wanted = set(names)
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        end = _NAME_END.search(line)
        if end is None or line[:end.start()] not in wanted:
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            continue
        value = float(match.group(2))
        if math.isfinite(value):
            totals[match.group(1)] = totals.get(match.group(1), 0.0) + value
    return {name: total for name, total in totals.items() if math.isfinite(total)}


class Backlog(NamedTuple):
    """Requests on one server: `running` (None: the engine has no such gauge) and `waiting`."""

    running: float | None
    waiting: float


def backlog_in(text: str, names: MetricNames) -> Backlog:
    """The backlog a /metrics page shows; a named gauge absent from it counts 0.

    (Exporters such as TEI's show a gauge only once it was first set.) Negative values, which
    no count of requests has, count 0 too.
    """
    found = parse_samples(text, names.load)
    running = None if names.running is None else max(0.0, found.get(names.running, 0.0))
    return Backlog(running, max(0.0, found.get(names.waiting, 0.0)))


def fetch_metrics(url: str, api_key: str | None = None, timeout: float = 2.0) -> str | None:
    """The text of a Prometheus page; None if it does not answer 200 in time.

    `timeout` (seconds) bounds the whole exchange, not each read. Redirects are not
    followed, and the page is asked for uncompressed and read as sent (so no small reply
    inflates past the cap); a body over `MAX_BODY` bytes, a bad URL or any transport error
    is None.
    """
    headers = {"Accept-Encoding": "identity"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    deadline = time.monotonic() + timeout
    chunks: list[bytes] = []
    size = 0
    try:
        with httpx2.stream("GET", url, headers=headers, timeout=timeout,
                           follow_redirects=False) as reply:
            if reply.status_code != 200:
                return None
            for chunk in reply.iter_raw():
                size += len(chunk)
                if size > MAX_BODY or time.monotonic() > deadline:
                    return None
                chunks.append(chunk)
    except (httpx2.HTTPError, httpx2.InvalidURL, httpx2.StreamError, ValueError):
        return None
    return b"".join(chunks).decode("utf-8", "replace")


def read_backlog(endpoint: Endpoint, timeout: float = 2.0) -> Backlog | None:
    """The backlog of one endpoint, read from its `metrics_url` with its API key.

    Uses the gauges its entry names (`load_metrics`). None when the entry names none or has
    no `metrics_url`, or the page does not answer 200 within `timeout` seconds (see
    `fetch_metrics`).
    """
    names = MetricNames.of(endpoint)
    if names is None or not endpoint.metrics_url:
        return None
    text = fetch_metrics(endpoint.metrics_url, endpoint.api_key, timeout)
    return None if text is None else backlog_in(text, names)


__all__ = [
    "MAX_BODY", "TEI_METRICS", "VLLM_METRICS", "Backlog", "MetricNames", "backlog_in",
    "fetch_metrics", "parse_samples", "read_backlog",
]
