"""`connect()` / `aconnect()`: a real OpenAI client whose requests go to the registry's servers.

Two timeouts, never mixed up:

- `wait_timeout` (seconds): how long to wait for a ready endpoint, at connect time and later
  whenever every replica is down or failing (a request retries with back-off until then).
- `timeout`: the OpenAI SDK's own request timeout (a number or an `httpx2.Timeout`), passed
  to the SDK unchanged.

Plus the progress deadlines of the routing core (`first_byte_timeout`, `idle_timeout`, see
`RoutingSettings`) and `queue_timeout` for a pilot job still queued in SLURM.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from nerschat.client.readiness import wait_for_endpoints
from nerschat.client.routing import EndpointPool, RoutingSettings
from nerschat.client.transport import AsyncFailoverTransport, FailoverTransport
from nerschat.errors import UsageError
from nerschat.registry import Endpoint, Registry

# The SDK needs some base URL and key; the transport replaces both for each request.
ROUTED_BASE_URL = "http://nerschat.registry/v1"
ROUTED_API_KEY = "per-endpoint-key-set-by-nerschat"
DEFAULTS = RoutingSettings()

RegistryLike = Registry | str | os.PathLike[str] | None

_POOLS: weakref.WeakKeyDictionary[Any, EndpointPool] = weakref.WeakKeyDictionary()


def as_registry(registry: RegistryLike) -> Registry:
    return Registry.of(registry)


def _check_kind(kind: str | None) -> None:
    if kind not in (None, "llm", "embedding"):
        raise ValueError(f"kind must be 'llm', 'embedding' or None, got {kind!r}")


def pool_of(client: openai.OpenAI | openai.AsyncOpenAI | httpx2.AsyncClient) -> EndpointPool:
    """The endpoint pool behind a client made by `connect()`, `aconnect()` or
    `routed_http_client()`: its `loads()` and `stats()` show per-endpoint counters.

    Raises UsageError for a client nerschat did not make.
    """
    pool = _POOLS.get(client)
    if pool is None:
        raise UsageError(f"{type(client).__name__} was not made by nerschat.connect()/aconnect()")
    return pool


def make_pool(model: str | None, kind: str | None, registry: RegistryLike, *,
              timeout: float | None = None, wait: bool = True,
              on_status: Callable[[str], None] | None = None, refresh_interval: float = 2.0,
              wait_timeout: float | None = None,
              queue_timeout: float | None = None) -> EndpointPool:
    """A pool for `model`/`kind`, after waiting (`wait_timeout` s, `timeout` is its older
    name) for a first ready endpoint when `wait`."""
    _check_kind(kind)
    reg = as_registry(registry)
    budget = wait_timeout if wait_timeout is not None else timeout
    if wait:
        wait_for_endpoints(reg, model, kind, 600.0 if budget is None else budget,
                           on_status=on_status, queue_timeout=queue_timeout)
    return EndpointPool(reg, model, kind, refresh_interval=refresh_interval)


def routing_settings(wait_timeout: float = 600.0, *,
                     first_byte_timeout: float | None = DEFAULTS.first_byte_timeout,
                     idle_timeout: float | None = DEFAULTS.idle_timeout,
                     strict_deadlines: bool = False,
                     failover_attempts: int | None = None) -> RoutingSettings:
    """`RoutingSettings` from `connect()`'s keyword names."""
    return RoutingSettings(wait_timeout=wait_timeout, first_byte_timeout=first_byte_timeout,
                           idle_timeout=idle_timeout, strict_deadlines=strict_deadlines,
                           max_attempts=failover_attempts)


def connect(
    model: str | None = None,
    kind: str | None = None,
    registry: RegistryLike = None,
    wait_timeout: float = 600.0,
    *,
    timeout: float | httpx2.Timeout | None = openai.DEFAULT_TIMEOUT,
    first_byte_timeout: float | None = DEFAULTS.first_byte_timeout,
    idle_timeout: float | None = DEFAULTS.idle_timeout,
    strict_deadlines: bool = False,
    queue_timeout: float | None = None,
    wait: bool = True,
    on_status: Callable[[str], None] | None = None,
    max_retries: int = openai.DEFAULT_MAX_RETRIES,
    failover_attempts: int | None = None,
    refresh_interval: float = 2.0,
    **client_kwargs: Any,
) -> openai.OpenAI:
    """An `openai.OpenAI` that reaches every ready endpoint of `model` (or `kind`).

    With `model=None`, each request goes to an endpoint serving the request's own `model`,
    so one client can chat with one model and embed with another.

    wait_timeout: seconds to wait for a first ready endpoint (raising `EndpointTimeout` with
        what was seen) and, later, how long a request keeps retrying / waiting when every
        replica is down or failing (then the SDK gets a 503 that it does not retry).
    timeout: the SDK's own request timeout, passed through (default: the SDK's, 600 s).
    first_byte_timeout, idle_timeout: progress deadlines (s) after which an attempt on a
        stalled replica is abandoned and failed over (see `RoutingSettings`); None: never.
    strict_deadlines: abandon at those deadlines even on a replica that is progressing.
    queue_timeout: seconds a pilot job may sit queued in SLURM while we wait (None: no limit;
        queue time does not count against `wait_timeout`).
    failover_attempts: optional cap on attempts per request (default: the deadline decides).
    """
    pool = make_pool(model, kind, registry, wait_timeout=wait_timeout, wait=wait,
                     on_status=on_status, refresh_interval=refresh_interval,
                     queue_timeout=queue_timeout)
    settings = routing_settings(wait_timeout, first_byte_timeout=first_byte_timeout,
                                idle_timeout=idle_timeout, strict_deadlines=strict_deadlines,
                                failover_attempts=failover_attempts)
    transport = FailoverTransport(pool, settings=settings)
    http_client = openai.DefaultHttpxClient(transport=transport)
    client = openai.OpenAI(base_url=ROUTED_BASE_URL, api_key=ROUTED_API_KEY,
                           http_client=http_client, max_retries=max_retries, timeout=timeout,
                           **client_kwargs)
    _POOLS[client] = pool
    return client


def aconnect(
    model: str | None = None,
    kind: str | None = None,
    registry: RegistryLike = None,
    wait_timeout: float = 600.0,
    *,
    timeout: float | httpx2.Timeout | None = openai.DEFAULT_TIMEOUT,
    first_byte_timeout: float | None = DEFAULTS.first_byte_timeout,
    idle_timeout: float | None = DEFAULTS.idle_timeout,
    strict_deadlines: bool = False,
    queue_timeout: float | None = None,
    wait: bool = True,
    on_status: Callable[[str], None] | None = None,
    max_retries: int = openai.DEFAULT_MAX_RETRIES,
    failover_attempts: int | None = None,
    refresh_interval: float = 2.0,
    **client_kwargs: Any,
) -> openai.AsyncOpenAI:
    """The `openai.AsyncOpenAI` twin of `connect()` (same arguments; the readiness wait blocks)."""
    pool = make_pool(model, kind, registry, wait_timeout=wait_timeout, wait=wait,
                     on_status=on_status, refresh_interval=refresh_interval,
                     queue_timeout=queue_timeout)
    settings = routing_settings(wait_timeout, first_byte_timeout=first_byte_timeout,
                                idle_timeout=idle_timeout, strict_deadlines=strict_deadlines,
                                failover_attempts=failover_attempts)
    transport = AsyncFailoverTransport(pool, settings=settings)
    http_client = openai.DefaultAsyncHttpxClient(transport=transport)
    client = openai.AsyncOpenAI(base_url=ROUTED_BASE_URL, api_key=ROUTED_API_KEY,
                                http_client=http_client, max_retries=max_retries,
                                timeout=timeout, **client_kwargs)
    _POOLS[client] = pool
    return client


def routed_http_client(pool: EndpointPool, timeout: float | None = None,
                       request_timeout: float = 600.0, *, wait_timeout: float | None = None,
                       settings: RoutingSettings | None = None) -> httpx2.AsyncClient:
    """A plain async HTTP client over the same routing, for non-OpenAI routes (TEI /embed).

    `wait_timeout` (`timeout` is its older name) as in `connect()`; `request_timeout` is the
    HTTP client's own timeout per request, seconds.
    """
    wait_for = wait_timeout if wait_timeout is not None else timeout
    transport = AsyncFailoverTransport(
        pool, settings=settings or routing_settings(600.0 if wait_for is None else wait_for))
    client = httpx2.AsyncClient(transport=transport,
                                base_url=ROUTED_BASE_URL.removesuffix("/v1"),
                                timeout=request_timeout)
    _POOLS[client] = pool
    return client


def endpoints(model: str | None = None, kind: str | None = None, registry: RegistryLike = None,
              *, include_unusable: bool = False) -> list[Endpoint]:
    """The registry's endpoints for a model/kind (ready and fresh unless asked otherwise)."""
    _check_kind(kind)
    return as_registry(registry).endpoints(model, kind, include_unusable=include_unusable)
