"""The router's one seam to `nerschat.client`: the same pool and fail-over transport.

Every forwarded request goes through the client's `AsyncFailoverTransport` over one `EndpointPool` of the whole registry (routing by the body's `model` field), so
least-outstanding choice, fail-over, waiting for a replica and cooling down failing replicas
are the client transport's own code. What the router adds around it is observation only: an
inner transport that counts attempts and failures per upstream endpoint (over aiohttp's
client, see `nerschat.client.upstream`), and a read of the
pool's per-endpoint load for `/metrics`. Everything the router reads from `nerschat.client`
is in this module.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx2

from nerschat.client.routing import EndpointPool
from nerschat.client.transport import (
    FAILOVER_ERRORS,
    FAILOVER_STATUSES,
    AsyncFailoverTransport,
    model_of,
)
from nerschat.client.upstream import AiohttpTransport
from nerschat.registry import Registry
from nerschat.router.metrics import RouterMetrics

__all__ = ["EndpointView", "ObservedTransport", "RoutingCore", "model_of"]

# The transport replaces scheme, host and path prefix per request; this only has to parse.
UPSTREAM_BASE_URL = "http://nerschat.registry"


@dataclass(frozen=True)
class EndpointView:
    """What `/metrics` shows of one upstream endpoint."""

    id: str
    model: str
    in_flight: int
    failures: int
    ejected: bool


class ObservedTransport(httpx2.AsyncBaseTransport):
    """The real HTTP transport, counting each attempt per upstream endpoint.

    A failed attempt (connection error, timeout before the answer, 502/503/504) is what
    makes the fail-over transport cool the endpoint down and retry elsewhere: it counts
    as one fail-over and one ejection of that endpoint.
    """

    def __init__(self, pool: EndpointPool, metrics: RouterMetrics):
        self.pool = pool
        self.metrics = metrics
        self.inner = AiohttpTransport()
        self._ids: dict[bytes, tuple[str, str]] = {}

    def _endpoint_of(self, url: httpx2.URL) -> tuple[str, str]:
        netloc = url.netloc
        known = self._ids.get(netloc)
        if known is None:
            for load in self.pool.loads():
                self._ids[load.root.netloc] = (load.id, load.endpoint.model)
            known = self._ids.get(netloc, (netloc.decode("ascii", "replace"), ""))
        return known

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send one attempt upstream and count it for the endpoint it went to."""
        endpoint, model = self._endpoint_of(request.url)
        started = time.perf_counter()
        try:
            response = await self.inner.handle_async_request(request)
        except FAILOVER_ERRORS:
            self.metrics.upstream_failed(endpoint, model)
            raise
        if response.status_code in FAILOVER_STATUSES:
            self.metrics.upstream_failed(endpoint, model)
        else:
            self.metrics.upstream_answered(endpoint, model, time.perf_counter() - started)
        return response

    async def aclose(self) -> None:
        """Close the upstream connections."""
        await self.inner.aclose()


class RoutingCore:
    """One pool over the registry and the HTTP client that forwards through it.

    Parameters
    ----------
    registry : the registry to route over (every model, every kind but `router`).
    metrics : where attempts and failures are counted.
    wait_timeout : seconds a request waits when no replica of its model is usable.
    request_timeout : seconds of silence from an upstream before the attempt fails.
    refresh_interval : seconds between registry reads by the pool.
    """

    def __init__(self, registry: Registry, metrics: RouterMetrics, *, wait_timeout: float,
                 request_timeout: float, refresh_interval: float = 2.0):
        self.pool = EndpointPool(registry, refresh_interval=refresh_interval)
        self.transport = AsyncFailoverTransport(
            self.pool, wait_timeout=wait_timeout, inner=ObservedTransport(self.pool, metrics))
        self._timeout = httpx2.Timeout(request_timeout,
                                       connect=min(10.0, request_timeout)).as_dict()
        self._urls: dict[str, httpx2.URL] = {}

    async def send(self, method: str, path: str, body: bytes,
                   headers: dict[str, str]) -> httpx2.Response:
        """Send through the fail-over transport; the answer's body is not read yet.

        The transport is called directly (an `httpx2.AsyncClient` around it would only
        add per-request work: URL joining, cookies, auth and redirect hooks).
        """
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx2.URL(UPSTREAM_BASE_URL + path)
        request = httpx2.Request(method, url, headers=headers, content=body,
                                 extensions={"timeout": self._timeout})
        return await self.transport.handle_async_request(request)

    def endpoints(self) -> list[EndpointView]:
        """The pool's current per-endpoint load (read at scrape time)."""
        now = time.monotonic()
        return [EndpointView(load.id, load.endpoint.model, load.outstanding, load.failures,
                             load.cooldown_until > now)
                for load in self.pool.loads()]

    async def aclose(self) -> None:
        """Close the transport and its upstream connections."""
        await self.transport.aclose()
