"""`connect()` / `aconnect()`: a real OpenAI client whose requests go to the registry's servers."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from nerschat.client.pool import EndpointPool
from nerschat.client.readiness import wait_for_endpoints
from nerschat.client.transport import AsyncFailoverTransport, FailoverTransport
from nerschat.registry import Endpoint, Registry

# The SDK needs some base URL and key; the transport replaces both for each request.
ROUTED_BASE_URL = "http://nerschat.registry/v1"
ROUTED_API_KEY = "per-endpoint-key-set-by-nerschat"

RegistryLike = Registry | str | os.PathLike[str] | None


def as_registry(registry: RegistryLike) -> Registry:
    return Registry.of(registry)


def _check_kind(kind: str | None) -> None:
    if kind not in (None, "llm", "embedding"):
        raise ValueError(f"kind must be 'llm', 'embedding' or None, got {kind!r}")


def make_pool(model: str | None, kind: str | None, registry: RegistryLike, *, timeout: float,
              wait: bool, on_status: Callable[[str], None] | None,
              refresh_interval: float) -> EndpointPool:
    _check_kind(kind)
    reg = as_registry(registry)
    if wait:
        wait_for_endpoints(reg, model, kind, timeout, on_status=on_status)
    return EndpointPool(reg, model, kind, refresh_interval=refresh_interval)


def connect(
    model: str | None = None,
    kind: str | None = None,
    registry: RegistryLike = None,
    timeout: float = 600.0,
    *,
    wait: bool = True,
    on_status: Callable[[str], None] | None = None,
    max_retries: int = openai.DEFAULT_MAX_RETRIES,
    failover_attempts: int | None = None,
    refresh_interval: float = 2.0,
    **client_kwargs: Any,
) -> openai.OpenAI:
    """An `openai.OpenAI` that reaches every ready endpoint of `model` (or `kind`).

    With `model=None`, each request goes to an endpoint serving the request's own `model`,
    so one client can chat with one model and embed with another. `timeout` bounds the wait
    for a first ready endpoint (raising `EndpointTimeout` with what was seen) and, later,
    how long a request waits when every replica is down.
    """
    pool = make_pool(model, kind, registry, timeout=timeout, wait=wait, on_status=on_status,
                     refresh_interval=refresh_interval)
    transport = FailoverTransport(pool, wait_timeout=timeout, attempts=failover_attempts)
    http_client = openai.DefaultHttpxClient(transport=transport)
    client = openai.OpenAI(base_url=ROUTED_BASE_URL, api_key=ROUTED_API_KEY,
                           http_client=http_client, max_retries=max_retries, **client_kwargs)
    client.nerschat_pool = pool  # type: ignore[attr-defined]
    return client


def aconnect(
    model: str | None = None,
    kind: str | None = None,
    registry: RegistryLike = None,
    timeout: float = 600.0,
    *,
    wait: bool = True,
    on_status: Callable[[str], None] | None = None,
    max_retries: int = openai.DEFAULT_MAX_RETRIES,
    failover_attempts: int | None = None,
    refresh_interval: float = 2.0,
    **client_kwargs: Any,
) -> openai.AsyncOpenAI:
    """The `openai.AsyncOpenAI` twin of `connect()` (the readiness wait blocks)."""
    pool = make_pool(model, kind, registry, timeout=timeout, wait=wait, on_status=on_status,
                     refresh_interval=refresh_interval)
    transport = AsyncFailoverTransport(pool, wait_timeout=timeout, attempts=failover_attempts)
    http_client = openai.DefaultAsyncHttpxClient(transport=transport)
    client = openai.AsyncOpenAI(base_url=ROUTED_BASE_URL, api_key=ROUTED_API_KEY,
                                http_client=http_client, max_retries=max_retries,
                                **client_kwargs)
    client.nerschat_pool = pool  # type: ignore[attr-defined]
    return client


def routed_http_client(pool: EndpointPool, timeout: float = 600.0,
                       request_timeout: float = 600.0) -> httpx2.AsyncClient:
    """A plain async HTTP client over the same routing, for non-OpenAI routes (TEI /embed)."""
    transport = AsyncFailoverTransport(pool, wait_timeout=timeout)
    return httpx2.AsyncClient(transport=transport, base_url=ROUTED_BASE_URL.removesuffix("/v1"),
                              timeout=request_timeout)


def endpoints(model: str | None = None, kind: str | None = None, registry: RegistryLike = None,
              *, include_unusable: bool = False) -> list[Endpoint]:
    """The registry's endpoints for a model/kind (ready and fresh unless asked otherwise)."""
    _check_kind(kind)
    return as_registry(registry).endpoints(model, kind, include_unusable=include_unusable)

