"""The routing core: which endpoint gets a request, when one is ejected, when to give up.

Transport-agnostic: the OpenAI transports (`nerschat.client.transport`), the HTTP router and
the workflows all route through an `EndpointPool` and a `RoutingPolicy`; only the waiting
(blocking or asyncio) lives in the adapters.

- Reading the registry means listing a directory on a parallel file system, so the pool does
  it on a short interval and right after a failure (rate-limited), never per request.
- Endpoints are picked by least outstanding requests. A failed attempt (connection error,
  progress deadline, 500/502/503/504, a reply that is not the API's JSON) cools the endpoint
  down with a growing back-off; an endpoint whose recent error rate is far above its peers'
  is ejected even when it answers quickly (outlier ejection), so a replica that fails fast
  never wins the least-outstanding choice.
- Work that is paced (the workflows) reserves a slot on one endpoint (`EndpointPool.reserve`)
  under that endpoint's own adaptive in-flight limit (`nerschat.client.pacing`), sizes the
  work to that endpoint's advertised limits, and pins its requests to it (`pinned`).
- Every endpoint keeps counters (requests, errors, fail-overs, ejections, in flight) for
  metrics: `EndpointPool.stats()`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import hashlib
import itertools
import json
import re
import statistics
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2

from nerschat.client.pacing import AdaptiveLimit, Baseline
from nerschat.errors import FailureError
from nerschat.registry import Endpoint, Registry

AFFINITY_HEADER = "X-Nerschat-Affinity"
"""Request header naming a prefix-affinity key: requests with equal keys (e.g. the reasoning
and the verdict request of one judged item) go to the same replica while it is usable and not
much busier than the least-loaded one, so vLLM's prefix cache serves their shared prompt."""
AFFINITY_SLACK = 4
"""Requests in flight the affinity replica may have beyond 1.5x the least-loaded one's."""
MIN_COOLDOWN = 0.5
"""Seconds an endpoint is left alone after its first failure (doubles per failure in a row;
failures while it cools down do not count: they were in flight when it failed)."""
MAX_COOLDOWN = 30.0
"""Longest cool-down after consecutive failures, seconds."""
OUTLIER_COOLDOWN = 10.0
"""Seconds an outlier (error rate far above its peers') is ejected for (doubles per ejection)."""
ERROR_RATE_WEIGHT = 0.1
"""Weight of one outcome in an endpoint's error rate (an exponential moving average)."""
OUTLIER_MIN_REQUESTS = 10
OUTLIER_MIN_RATE = 0.3
OUTLIER_MARGIN = 0.2
SLOWDOWN_FACTOR = 10.0
"""A replica silent for this many times its own usual response time (and past the deadline)
has stalled, even when no peer is busy."""
LATENCY_WEIGHT = 0.2
INITIAL_IN_FLIGHT = 16
"""Where an endpoint's adaptive in-flight limit starts when it advertises no capacity in
requests; else at that capacity (at most MAX_FLOOR). Only a start: the limit then follows the
latency measured on that endpoint (it doubles while latency stays flat), but never below the
requests a generation server runs at once (vLLM's `max_num_seqs`): fewer in flight only leaves
its slots idle, whatever slows the latency down (a busy client, a loaded machine). Starting at
the capacity, not above it, lets the first window measure the service time without a queue:
a baseline measured with C requests waiting would be twice too long, and would let the limit
hold about 4C in flight until a probe corrects it. An embedding server's `capacity` is no
count of requests (vLLM: sequences, one per text of a request; TEI: an admission cap on
queued requests), so its limit is the measured one alone."""
MAX_FLOOR = 128
"""The highest floor (and start) an advertised capacity gives a limit."""

_PINNED: contextvars.ContextVar[str | None] = contextvars.ContextVar("nerschat_pinned",
                                                                    default=None)


@contextlib.contextmanager
def pinned(endpoint_id: str | None) -> Iterator[None]:
    """Requests routed inside this block (this asyncio task or thread) go to `endpoint_id`.

    While that endpoint is usable; after it fails (cool-down) or leaves the registry they
    fail over as usual. None: no pin.
    """
    token = _PINNED.set(endpoint_id)
    try:
        yield
    finally:
        _PINNED.reset(token)

FAILOVER_STATUSES = frozenset({500, 502, 503, 504})
"""Statuses that send a request that did not stream to another replica."""

WRONG_SERVER_STATUSES = frozenset({401, 404})
"""Statuses that, while a peer serves the same model, say the replica is not the server its
entry names (another server on a dead pilot's port): fail over and eject it."""

DIMENSION_HEADER = "x-nerschat-dimension"
"""An embedding request may name the vector dimension every replica must answer with."""

MAX_SHAPE_CHECK = 64 << 20
"""Replies up to this many bytes are parsed to check their shape (larger: framing only)."""

MODEL_FIELD = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
STREAM_FIELD = re.compile(rb'"stream"\s*:\s*true')
# Paths whose JSON reply must hold this field (a reply without it is the server's fault).
REPLY_FIELDS = {"/chat/completions": "choices", "/completions": "choices", "/embeddings": "data"}
TEI_EMBED_PATH = "/embed"
REPLY_PATHS = (*REPLY_FIELDS, TEI_EMBED_PATH)

Outcome = Literal["ok", "error", "failed"]
"""`ok`: answered; `error`: a server error handed to the caller; `failed`: failed over."""


class NoEndpointAvailable(FailureError):
    """Nothing usable right now (the message says what the registry shows)."""


class EndpointFailed(FailureError):
    """One attempt failed in a way another replica may not (triggers fail-over)."""


@dataclass(frozen=True)
class RoutingSettings:
    """How long to wait and when to give up; every time in seconds.

    wait_timeout: how long one request may wait for a usable endpoint and keep failing over
        (retries with back-off and jitter until then, re-reading the registry). Separate from
        the OpenAI SDK's own request `timeout`.
    first_byte_timeout: an attempt with no response headers after this long is abandoned and
        failed over when its endpoint has made no progress on any request meanwhile while a
        peer serving the same model has, or it has been silent for 10 times its usual
        response time (a hung or frozen replica). A request is abandoned this way once; its
        next attempt waits without this deadline (unless strict). None: never.
    idle_timeout: the same for the gap between two chunks of a streamed (or being read)
        reply; a stream already handed to the caller fails instead of failing over.
    strict_deadlines: abandon at the deadlines even when the endpoint is progressing or has
        no peer (for short requests whose latency is known).
    max_attempts: optional cap on attempts per request (None: the deadline alone decides).
    check_replies: fail over when a reply that did not stream is not the API's JSON.
    """

    wait_timeout: float = 600.0
    first_byte_timeout: float | None = 15.0
    idle_timeout: float | None = 15.0
    strict_deadlines: bool = False
    max_attempts: int | None = None
    check_replies: bool = True

    def __post_init__(self) -> None:
        for name in ("wait_timeout", "first_byte_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1 or None, got {self.max_attempts!r}")


@dataclass(repr=False)
class EndpointLoad:
    """One endpoint and what this client process knows about it (counters for metrics)."""

    endpoint: Endpoint
    root: httpx2.URL
    authorization: str | None = field(default=None, repr=False)
    outstanding: int = 0
    sent: int = 0
    errors: int = 0
    failovers: int = 0
    ejections: int = 0
    consecutive_failures: int = 0
    error_rate: float = 0.0
    cooldown_until: float = 0.0
    last_progress: float = 0.0
    latency: float = 0.0
    order: int = 0
    reserved: int = 0
    limit: AdaptiveLimit = field(default_factory=lambda: AdaptiveLimit(initial=INITIAL_IN_FLIGHT))
    _targets: dict[str, httpx2.URL] = field(default_factory=dict)

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointLoad:
        """Fresh counters for `endpoint`, with its URL root and Authorization header."""
        root = httpx2.URL(endpoint.url.rstrip("/"))
        authorization = f"Bearer {endpoint.api_key}" if endpoint.api_key else None
        requests = (endpoint.capacity or 0) if endpoint.kind != "embedding" else 0
        floor = min(MAX_FLOOR, max(4, requests))
        return cls(endpoint, root, authorization,
                   limit=AdaptiveLimit(initial=max(INITIAL_IN_FLIGHT, floor), minimum=floor))

    def __repr__(self) -> str:  # never the key
        return (f"EndpointLoad(id={self.id!r}, url={self.endpoint.url!r}, "
                f"outstanding={self.outstanding}, sent={self.sent}, errors={self.errors}, "
                f"failovers={self.failovers}, ejections={self.ejections})")

    @property
    def id(self) -> str:
        """The endpoint's registry id."""
        return self.endpoint.id

    @property
    def failures(self) -> int:
        """Attempts that failed over (kept for older callers)."""
        return self.failovers

    def target(self, path: str) -> httpx2.URL:
        """`/v1/x` -> `<endpoint url>/x`; any other path -> `<server root>/path` (TEI /embed).

        Cached per path: URL building costs more than the rest of the routing together.
        """
        url = self._targets.get(path)
        if url is None:
            url = self._targets[path] = self._build_target(path)
        return url

    def _build_target(self, path: str) -> httpx2.URL:
        base_path = self.root.path
        if path.startswith("/v1/") or path == "/v1":
            path = base_path + path[3:]
        elif base_path.endswith("/v1"):
            path = base_path[:-3] + path
        return self.root.copy_with(path=path)


class EndpointPool:
    """The ready endpoints of a model (or kind) with their load; thread-safe.

    Shared by the sync and async transports of one client, and by anything else that routes
    (a router, a workflow). `acquire()` counts a request in flight, `release()` records how
    it ended.
    """

    def __init__(
        self,
        registry: Registry,
        model: str | None = None,
        kind: str | None = None,
        *,
        refresh_interval: float = 2.0,
        min_refresh_gap: float = 0.25,
    ):
        self.registry = registry
        self.model = model
        self.kind = kind
        self.refresh_interval = refresh_interval
        self.min_refresh_gap = min_refresh_gap
        self._loads: dict[str, EndpointLoad] = {}
        self._lock = threading.Lock()
        self._refreshed_at = -1e18
        self._counter = itertools.count()
        self._baselines: dict[str, Baseline] = {}  # per model: replicas judged alike
        self.last_scan_entries: list[Endpoint] = []

    def __repr__(self) -> str:
        return f"EndpointPool({self.registry!r}, model={self.model!r}, kind={self.kind!r})"

    # -- registry ---------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the registry if the interval passed (or, when forced, the minimum gap)."""
        now = time.monotonic()
        gap = self.min_refresh_gap if force else self.refresh_interval
        if now - self._refreshed_at < gap:
            return
        with self._lock:
            if time.monotonic() - self._refreshed_at < gap:
                return
            self._refreshed_at = time.monotonic()
            failing = [i for i, load in self._loads.items() if load.consecutive_failures]
        # Cached: one stat when nothing changed; failing endpoints get their heartbeat checked.
        entries = self.registry.view().entries(recheck=failing if force else ())
        wall = time.time()
        usable = {
            e.id: e for e in entries
            if e.is_usable(wall)
            and (self.model is None or e.model == self.model)
            and (self.kind is None or e.kind == self.kind)
        }
        with self._lock:
            self.last_scan_entries = entries
            for endpoint_id in list(self._loads):
                if endpoint_id not in usable:
                    del self._loads[endpoint_id]
            for endpoint_id, endpoint in usable.items():
                load = self._loads.get(endpoint_id)
                if load is None:
                    load = EndpointLoad.of(endpoint)
                    load.order = next(self._counter)
                    load.limit.baseline = self._baselines.setdefault(endpoint.model, Baseline())
                    self._loads[endpoint_id] = load
                else:
                    load.endpoint = endpoint

    # -- choosing ---------------------------------------------------------------------

    def _serves(self, load: EndpointLoad, model: str | None) -> bool:
        return model is None or self.model is not None or load.endpoint.model == model

    def try_acquire(self, model: str | None = None,
                    affinity: str | None = None) -> EndpointLoad | None:
        """The least-loaded usable endpoint for `model` (one more in flight), or None.

        With an `affinity` key, the endpoint that rendezvous hashing of the key picks among
        the usable ones, unless it has more than 1.5x + `AFFINITY_SLACK` the requests in
        flight of the least-loaded one (then the least-loaded). Cheap and never blocks on
        anything but the pool lock (no squeue, no messages).
        """
        self.refresh()
        now = time.monotonic()
        pin = _PINNED.get()
        with self._lock:
            if pin is not None:
                load = self._loads.get(pin)
                if load is not None and load.cooldown_until <= now and self._serves(load, model):
                    load.outstanding += 1
                    load.sent += 1
                    return load
            best: EndpointLoad | None = None
            preferred: EndpointLoad | None = None
            preferred_rank = b""
            for load in self._loads.values():
                if load.cooldown_until > now or not self._serves(load, model):
                    continue
                if best is None or (load.outstanding, load.sent) < (best.outstanding, best.sent):
                    best = load
                if affinity is not None:
                    rank = affinity_rank(affinity, load.id)
                    if preferred is None or rank > preferred_rank:
                        preferred, preferred_rank = load, rank
            if best is None:
                return None
            if preferred is not None and (
                    preferred.outstanding <= 1.5 * best.outstanding + AFFINITY_SLACK):
                best = preferred
            best.outstanding += 1
            best.sent += 1
            return best

    def reserve(self, model: str | None = None, *, limited: bool = True) -> EndpointLoad | None:
        """A slot for one unit of paced work on the usable endpoint with the most room.

        The endpoint with the lowest share of its adaptive limit in use (with `limited`, only
        one below its limit); None if there is none. Give it back with `unreserve`.
        """
        self.refresh()
        now = time.monotonic()
        with self._lock:
            best: EndpointLoad | None = None
            best_share = 0.0
            for load in self._loads.values():
                if load.cooldown_until > now or not self._serves(load, model):
                    continue
                room = load.limit.current
                if limited and load.reserved >= room:
                    continue
                share = load.reserved / room
                if best is None or share < best_share:
                    best, best_share = load, share
            if best is not None:
                best.reserved += 1
            return best

    def unreserve(self, load: EndpointLoad, latency: float | None = None) -> None:
        """Give back a slot taken by `reserve`; `latency` (seconds) of the work adapts the limit."""
        with self._lock:
            if latency is not None:
                load.limit.observe(latency, load.reserved)
            load.reserved -= 1

    def acquire(self, model: str | None = None) -> EndpointLoad:
        """Like `try_acquire`, but raises NoEndpointAvailable saying what the registry shows."""
        load = self.try_acquire(model)
        if load is None:
            raise NoEndpointAvailable(self.describe(model))
        return load

    def has_alternative(self, load: EndpointLoad, model: str | None = None) -> bool:
        """Whether another endpoint for `model` is usable right now (not cooling down)."""
        now = time.monotonic()
        with self._lock:
            return any(other is not load and other.cooldown_until <= now
                       and self._serves(other, model) for other in self._loads.values())

    def describe(self, model: str | None = None) -> str:
        """One line on why no endpoint is usable (for give-up messages; may run squeue, cached)."""
        from nerschat.client.readiness import describe_status

        with self._lock:
            known = [load for load in self._loads.values() if self._serves(load, model)]
            entries = list(self.last_scan_entries)
        if known:
            return f"all {len(known)} endpoint(s) for {model or self.model or self.kind} failing"
        return describe_status(self.registry, self.model or model, self.kind, entries)

    def progress(self, load: EndpointLoad, sent: float | None = None) -> None:
        """The endpoint delivered something (headers or a chunk): it is alive.

        With `sent` (monotonic time the request went out), the time to these headers also
        updates the endpoint's usual response time (a moving average, seconds).
        """
        now = load.last_progress = time.monotonic()
        if sent is not None:
            took = now - sent
            load.latency = took if not load.latency else (
                load.latency * (1 - LATENCY_WEIGHT) + took * LATENCY_WEIGHT)

    def stalled(self, load: EndpointLoad, since: float) -> bool:
        """Whether `load`, silent since `since` (monotonic), has stalled.

        True when it has made no progress on any request since then and either a peer
        serving its model has, or the silence is far beyond its own usual response time.
        """
        if load.last_progress > since:
            return False
        if load.latency and time.monotonic() - since > SLOWDOWN_FACTOR * load.latency:
            return True
        with self._lock:
            return any(peer is not load and peer.endpoint.model == load.endpoint.model
                       and peer.last_progress > since for peer in self._loads.values())

    def release(self, load: EndpointLoad, outcome: Outcome = "ok", *, ok: bool | None = None) -> None:
        """One request on `load` ended: `ok`, `error` (handed to the caller) or `failed` over."""
        if ok is not None:  # the older boolean form
            outcome = "ok" if ok else "failed"
        now = time.monotonic()
        with self._lock:
            load.outstanding -= 1
            if outcome == "ok":
                load.consecutive_failures = 0
                load.error_rate *= 1 - ERROR_RATE_WEIGHT
                return
            load.errors += 1
            load.error_rate = load.error_rate * (1 - ERROR_RATE_WEIGHT) + ERROR_RATE_WEIGHT
            if outcome == "failed":
                load.failovers += 1
                if load.cooldown_until <= now:
                    # Requests in flight together that fail together (a burst of connect
                    # timeouts, a restart) are one failure: only one after the cool-down
                    # ended is one more in a row. Counting each made 11 requests that timed
                    # out at once cool every replica for 30 s.
                    load.consecutive_failures += 1
                    backoff = min(MAX_COOLDOWN,
                                  MIN_COOLDOWN * 2 ** (load.consecutive_failures - 1))
                    load.cooldown_until = now + backoff
            if self._is_outlier(load):
                load.ejections += 1
                backoff = min(MAX_COOLDOWN * 4, OUTLIER_COOLDOWN * 2 ** (load.ejections - 1))
                load.cooldown_until = max(load.cooldown_until, now + backoff)
                load.error_rate = OUTLIER_MIN_RATE  # it comes back on probation

    def eject(self, load: EndpointLoad) -> None:
        """Take `load` out of rotation for an ejection's cool-down (growing each time)."""
        with self._lock:
            load.ejections += 1
            backoff = min(MAX_COOLDOWN * 4, OUTLIER_COOLDOWN * 2 ** (load.ejections - 1))
            load.cooldown_until = max(load.cooldown_until, time.monotonic() + backoff)

    def _is_outlier(self, load: EndpointLoad) -> bool:
        """Error rate far above the peers' (needs a few requests and at least one peer)."""
        if load.sent < OUTLIER_MIN_REQUESTS or load.error_rate < OUTLIER_MIN_RATE:
            return False
        peers = [p.error_rate for p in self._loads.values()
                 if p is not load and p.endpoint.model == load.endpoint.model]
        if not peers:
            return False
        return load.error_rate > statistics.median(peers) + OUTLIER_MARGIN

    # -- reading ------------------------------------------------------------------------

    def loads(self) -> list[EndpointLoad]:
        """A snapshot of the per-endpoint counters, in registry order."""
        with self._lock:
            return sorted(self._loads.values(), key=lambda load: load.order)

    def capacity(self) -> int:
        """Sum of the ready endpoints' advertised capacity (e.g. vLLM max_num_seqs)."""
        self.refresh()
        return sum(load.endpoint.capacity or 1 for load in self.loads())

    def stats(self) -> list[dict[str, object]]:
        """Per-endpoint counters for metrics, one dict per endpoint.

        Keys: id, model, requests, errors, failovers, ejections, in_flight, error_rate (0..1,
        4 decimals), cooling (bool).
        """
        now = time.monotonic()
        return [{"id": load.id, "model": load.endpoint.model, "requests": load.sent,
                 "errors": load.errors, "failovers": load.failovers,
                 "ejections": load.ejections, "in_flight": load.outstanding,
                 "error_rate": round(load.error_rate, 4),
                 "cooling": load.cooldown_until > now} for load in self.loads()]


def model_of(content: bytes) -> str | None:
    """The `model` field of a JSON request body (small bodies parsed, large ones scanned)."""
    if not content:
        return None
    if len(content) < 65536:
        try:
            body = json.loads(content)
        except ValueError:
            return None
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None
    match = MODEL_FIELD.search(content)
    return match.group(1).decode() if match else None


def is_streamed(content: bytes) -> bool:
    """Whether a JSON request body asks for a streamed reply (`"stream": true`)."""
    return b'"stream"' in content and STREAM_FIELD.search(content) is not None


def _input_count(request_body: bytes) -> int | None:
    """How many texts an embeddings request carries (`input`, or TEI's `inputs`), or None."""
    try:
        request = json.loads(request_body) if request_body else None
    except ValueError:
        return None
    if not isinstance(request, dict):
        return None
    given = request.get("input", request.get("inputs"))
    if isinstance(given, str):
        return 1
    if isinstance(given, list):
        if given and all(isinstance(x, int) for x in given):
            return 1  # one tokenized text
        return len(given)
    return None


def _vectors_problem(vectors: list[Any], count: int | None,
                     dimension: int | None = None) -> str | None:
    """Why a list of embedding vectors (lists or base64 strings) is not one per text."""
    if count is not None and len(vectors) != count:
        return f"reply has {len(vectors)} vectors for {count} texts"
    widths = set()
    for vector in vectors:
        if not isinstance(vector, (list, str)) or not vector:
            return "reply holds an empty or non-list vector"
        widths.add((type(vector).__name__, len(vector)))
    if len(widths) > 1:
        return "reply holds vectors of different dimensions"
    if dimension and vectors:
        first = vectors[0]
        try:
            width = len(first) if isinstance(first, list) else \
                len(base64.b64decode(first, validate=True)) // 4
        except (ValueError, binascii.Error):
            return "reply holds a vector that is not base64"
        if width != dimension:
            return f"reply has vectors of dimension {width}, not {dimension}"
    return None


def shape_problem(path: str, value: Any, request_body: bytes = b"",
                  dimension: int | None = None) -> str | None:
    """Why a parsed 200 reply does not have the API's shape, or None.

    Chat/completions: `choices` a non-empty list of objects. Embeddings: `data` a list of
    objects, one per input, `index`es unique and in range, vectors of one dimension. TEI's
    `/embed`: a list of one non-empty vector per input, of one dimension.
    """
    if path.endswith(TEI_EMBED_PATH):
        if not isinstance(value, list):
            return "reply is not a list of vectors"
        return _vectors_problem(value, _input_count(request_body), dimension)
    name = next((field for suffix, field in REPLY_FIELDS.items() if path.endswith(suffix)), None)
    if name is None:
        return None
    if not isinstance(value, dict):
        return "reply is not a JSON object"
    found = value.get(name)
    if name == "choices":
        if not isinstance(found, list) or not found:
            return "reply's 'choices' is not a non-empty list"
        if not all(isinstance(choice, dict) for choice in found):
            return "reply's 'choices' holds something other than objects"
        return None
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        return "reply's 'data' is not a list of objects"
    count = _input_count(request_body)
    indexes = [item.get("index") for item in found]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indexes):
        return "reply's 'data' has an item without an integer 'index'"
    if len(set(indexes)) != len(indexes) or any(
            i < 0 or i >= len(found) for i in indexes):
        return "reply's 'data' indexes repeat or are out of range"
    return _vectors_problem([item.get("embedding") for item in found], count, dimension)


def reply_problem(path: str, body: bytes, request_body: bytes = b"",
                  dimension: int | None = None) -> str | None:
    """Why a 200 reply to an API request that did not stream is not the API's JSON, or None.

    The body must be framed as one JSON object (a list for TEI's `/embed`) naming the field
    the API's reply must hold (`choices`, `data`); then, parsed (up to MAX_SHAPE_CHECK
    bytes), it must have the API's shape (`shape_problem`; the counts need `request_body`).
    Garbage, an HTML error page, a truncated body or an object of the wrong shape fail; a
    body broken only in its middle is left to the caller's parser (a per-item error there).
    """
    text = body.strip()
    if path.endswith(TEI_EMBED_PATH):
        if text[:1] != b"[" or text[-1:] != b"]":
            return f"reply is not a JSON list ({body[:40]!r})"
    else:
        name = next((field for suffix, field in REPLY_FIELDS.items() if path.endswith(suffix)),
                    None)
        if name is None:
            return None
        if text[:1] != b"{" or text[-1:] != b"}":
            return f"reply is not a JSON object ({body[:40]!r})"
        if b'"' + name.encode() + b'"' not in text:
            return f"reply has no {name!r} field"
    if len(text) > MAX_SHAPE_CHECK:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None  # broken in its middle: the caller's parser says what
    return shape_problem(path, value, request_body, dimension)


class RoutingPolicy:
    """Decisions shared by every adapter: routing a request, classifying replies, giving up."""

    def __init__(self, pool: EndpointPool, settings: RoutingSettings | None = None):
        self.pool = pool
        self.settings = settings or RoutingSettings()

    @property
    def wait_timeout(self) -> float:
        """Seconds a request waits for a usable endpoint before the caller gets a 503."""
        return self.settings.wait_timeout

    def model(self, content: bytes) -> str | None:
        """The model to route by: the pool's own, else the request body's `model`."""
        return None if self.pool.model is not None else model_of(content)

    @staticmethod
    def route(request: httpx2.Request, origin: httpx2.URL, load: EndpointLoad) -> None:
        """Point `request` at `load` (URL, Host, the endpoint's own key)."""
        url = load.target(origin.path)
        if origin.query:
            url = url.copy_with(query=origin.query)
        request.url = url
        request.headers["Host"] = url.netloc.decode("ascii")
        if load.authorization:
            request.headers["Authorization"] = load.authorization
        else:
            request.headers.pop("Authorization", None)

    def failed(self, load: EndpointLoad, reason: str, *, eject: bool = False) -> EndpointFailed:
        """Record a failed attempt on `load` (cool-down, re-read registry); the error to raise.

        `eject`: the replica answered wrongly (not the API, not the model): also ejected.
        """
        self.pool.release(load, "failed")
        if eject:
            self.pool.eject(load)
        self.pool.refresh(force=True)
        return EndpointFailed(f"{load.id}: {reason}")

    def abandon(self, load: EndpointLoad, since: float, now: float, limit: float | None) -> bool:
        """Whether an attempt waiting since `since` (monotonic) is to be given up at `now`.

        Not before `limit` seconds of waiting during which the endpoint delivered nothing to
        any request; then only if it has stalled (see `EndpointPool.stalled`), unless the
        deadlines are strict.
        """
        if limit is None:
            return False
        if self.settings.strict_deadlines:
            return now - since >= limit
        quiet = max(since, load.last_progress)
        return now - quiet >= limit and self.pool.stalled(load, quiet)

    def next_check(self, load: EndpointLoad, since: float, limit: float | None) -> float | None:
        """Seconds from now until `abandon` may first say yes (every 0.5 s once due), or None."""
        if limit is None:
            return None
        quiet = since if self.settings.strict_deadlines else max(since, load.last_progress)
        delay = quiet + limit - time.monotonic()
        return delay if delay > 0.01 else 0.5

    def expects_json(self, request: httpx2.Request) -> bool:
        """Whether the reply is the API's JSON object (POST to chat/completions/embeddings)."""
        return (self.settings.check_replies and request.method == "POST"
                and request.url.path.endswith(REPLY_PATHS))

    def out_of_attempts(self, attempts: int, deadline: float) -> bool:
        """Whether to stop retrying: `max_attempts` reached or the monotonic `deadline` passed."""
        cap = self.settings.max_attempts
        return (cap is not None and attempts >= cap) or time.monotonic() >= deadline

    @staticmethod
    def give_up(request: httpx2.Request, reason: str) -> httpx2.Response:
        """The 503 the caller gets (`x-should-retry: false`: the SDK must not retry it)."""
        body = {"error": {"message": f"nerschat: {reason}", "type": "nerschat_unavailable",
                          "code": 503}}
        return httpx2.Response(503, json=body, headers={"x-should-retry": "false"},
                               request=request)


def total(loads: Iterable[EndpointLoad], name: str) -> int:
    """Sum of one counter over endpoints (`sent`, `errors`, `failovers`, `ejections`)."""
    return sum(int(getattr(load, name)) for load in loads)


__all__ = [
    "EndpointFailed", "EndpointLoad", "EndpointPool", "NoEndpointAvailable", "RoutingPolicy",
    "RoutingSettings", "is_streamed", "model_of", "pinned", "reply_problem", "shape_problem",
]


def affinity_rank(key: str, endpoint_id: str) -> bytes:
    """Rendezvous (highest random weight) hash of an affinity key on one endpoint.

    The endpoint with the highest rank wins; when endpoints come or go only the keys of
    those endpoints move (Thaler and Ravishankar, "Using name-based mappings to increase
    hit rates", IEEE/ACM ToN 6(1), 1998).
    """
    return hashlib.blake2b(f"{key}\x1f{endpoint_id}".encode(), digest_size=8).digest()
