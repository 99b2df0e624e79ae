"""The client's view of the registry: a cached set of ready endpoints with their load.

Reading the registry means listing a directory on a parallel file system, so the pool does
it on a short interval and right after a failure (rate-limited), never per request.
Endpoints are picked by least outstanding requests; a failed one cools down with a
growing back-off and comes back once the cool-down ends and the registry still lists it.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field

import httpx2

from nerschat.client.readiness import describe_status
from nerschat.errors import FailureError
from nerschat.registry import Endpoint, Registry

MIN_COOLDOWN = 0.5
MAX_COOLDOWN = 30.0


@dataclass
class EndpointLoad:
    """One endpoint and what this client process knows about it."""

    endpoint: Endpoint
    root: httpx2.URL
    authorization: str | None
    outstanding: int = 0
    sent: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    order: int = field(default=0)
    _targets: dict[str, httpx2.URL] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointLoad:
        root = httpx2.URL(endpoint.url.rstrip("/"))
        authorization = f"Bearer {endpoint.api_key}" if endpoint.api_key else None
        return cls(endpoint, root, authorization)

    @property
    def id(self) -> str:
        return self.endpoint.id

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


class NoEndpointAvailable(FailureError):
    """Nothing usable right now (the message says what the registry shows)."""


class EndpointPool:
    """Thread-safe; shared by the sync and async transports of one client."""

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
                    self._loads[endpoint_id] = load
                else:
                    load.endpoint = endpoint

    # -- choosing ---------------------------------------------------------------------

    def acquire(self, model: str | None = None) -> EndpointLoad:
        """The least-loaded usable endpoint for `model`; counts one outstanding request."""
        self.refresh()
        now = time.monotonic()
        with self._lock:
            best: EndpointLoad | None = None
            for load in self._loads.values():
                if model is not None and self.model is None and load.endpoint.model != model:
                    continue
                if load.cooldown_until > now:
                    continue
                if best is None or (load.outstanding, load.sent) < (best.outstanding, best.sent):
                    best = load
            if best is None:
                raise NoEndpointAvailable(self._describe(model))
            best.outstanding += 1
            best.sent += 1
            return best

    def _describe(self, model: str | None) -> str:
        cooling = [load for load in self._loads.values()
                   if model is None or self.model is not None or load.endpoint.model == model]
        if cooling:
            return f"all {len(cooling)} endpoint(s) for {model or self.model or self.kind} failing"
        return describe_status(self.registry, self.model or model, self.kind,
                               self.last_scan_entries)

    def release(self, load: EndpointLoad, *, ok: bool) -> None:
        with self._lock:
            load.outstanding -= 1
            if ok:
                load.consecutive_failures = 0
                return
            load.failures += 1
            load.consecutive_failures += 1
            backoff = min(MAX_COOLDOWN, MIN_COOLDOWN * 2 ** (load.consecutive_failures - 1))
            load.cooldown_until = time.monotonic() + backoff

    def loads(self) -> list[EndpointLoad]:
        with self._lock:
            return sorted(self._loads.values(), key=lambda load: load.order)

    def capacity(self) -> int:
        """Sum of the ready endpoints' advertised capacity (e.g. vLLM max_num_seqs)."""
        self.refresh()
        return sum(load.endpoint.capacity or 1 for load in self.loads())
