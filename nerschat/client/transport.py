"""HTTP transports that route OpenAI SDK requests over the registry's endpoints.

They sit under an unchanged `openai.OpenAI` / `openai.AsyncOpenAI` (as httpx-style
transports), so any OpenAI code gains discovery, least-outstanding load balancing and
fail-over without changes:

- connection refused/reset, a timeout before the response started, or 502/503/504 cools
  the endpoint down, re-reads the registry and retries on another replica;
- when no replica is usable, the request waits for one (up to `wait_timeout`);
- once a response is handed to the SDK it is never retried (streams included);
- when fail-over gives up, the SDK gets a 503 marked `x-should-retry: false`, so the SDK's
  own `max_retries` (which still covers 408/409/429/500) does not multiply the attempts.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx2
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from nerschat.client.pool import EndpointLoad, EndpointPool, NoEndpointAvailable
from nerschat.errors import FailureError

FAILOVER_STATUSES = frozenset({502, 503, 504})
FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.ReadError,
    httpx2.ReadTimeout,
    httpx2.WriteError,
    httpx2.RemoteProtocolError,
)
MODEL_FIELD = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
DEFAULT_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=200)
WAIT_POLL = 0.2


class EndpointFailed(FailureError):
    """One attempt failed in a way another replica may not (triggers fail-over)."""


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


class _FailoverPolicy:
    """What the sync and async transports share: routing, back-off and giving up."""

    def __init__(self, pool: EndpointPool, *, wait_timeout: float, attempts: int | None):
        self.pool = pool
        self.wait_timeout = wait_timeout
        self.attempts = attempts

    def _attempt_count(self) -> int:
        # Enough to try every replica once more than once, bounded for huge pools.
        return self.attempts or min(8, max(3, len(self.pool.loads()) + 2))

    def _retry_policy(self, already: int) -> dict[str, Any]:
        return {
            "stop": stop_after_attempt(max(1, self._attempt_count() - already)),
            "wait": wait_random_exponential(multiplier=0.05, max=1.0),
            "retry": retry_if_exception_type(EndpointFailed),
            "reraise": True,
        }

    def _model(self, request: httpx2.Request) -> str | None:
        return None if self.pool.model is not None else model_of(request.content)

    @staticmethod
    def _route(request: httpx2.Request, origin: httpx2.URL, load: EndpointLoad) -> None:
        url = load.target(origin.path)
        if origin.query:
            url = url.copy_with(query=origin.query)
        request.url = url
        request.headers["Host"] = url.netloc.decode("ascii")
        if load.authorization:
            request.headers["Authorization"] = load.authorization
        else:
            request.headers.pop("Authorization", None)

    def _failed(self, load: EndpointLoad, reason: str) -> EndpointFailed:
        self.pool.release(load, ok=False)
        self.pool.refresh(force=True)
        return EndpointFailed(f"{load.id}: {reason}")

    @staticmethod
    def _give_up(request: httpx2.Request, reason: str) -> httpx2.Response:
        body = {"error": {"message": f"nerschat: {reason}", "type": "nerschat_unavailable",
                          "code": 503}}
        return httpx2.Response(503, json=body, headers={"x-should-retry": "false"},
                               request=request)


class _ReleasingStream(httpx2.SyncByteStream):
    """Counts the request as finished when the SDK closes the body.

    Iteration is handed straight to the inner stream: a generator wrapper here costs more
    per response than all of the routing.
    """

    def __init__(self, inner: Any, release: Callable[[], None]):
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class _AsyncReleasingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any, release: Callable[[], None]):
        self._inner = inner
        self._release: Callable[[], None] | None = release

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._inner.__aiter__()  # type: ignore[no-any-return]

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class FailoverTransport(_FailoverPolicy, httpx2.BaseTransport):
    """Synchronous transport for `openai.OpenAI`."""

    def __init__(self, pool: EndpointPool, *, wait_timeout: float = 600.0,
                 attempts: int | None = None, inner: httpx2.BaseTransport | None = None):
        super().__init__(pool, wait_timeout=wait_timeout, attempts=attempts)
        self.inner = inner or httpx2.HTTPTransport(limits=DEFAULT_LIMITS)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        request.read()
        model = self._model(request)
        origin = request.url
        deadline = time.monotonic() + self.wait_timeout
        try:
            try:  # the common case, without building a retry policy
                return self._send_once(request, origin, model, deadline)
            except EndpointFailed:
                pass
            for attempt in Retrying(**self._retry_policy(already=1)):
                with attempt:
                    return self._send_once(request, origin, model, deadline)
        except EndpointFailed as exc:
            return self._give_up(request, f"fail-over gave up; last error: {exc}")
        except NoEndpointAvailable as exc:
            return self._give_up(request, f"no endpoint within {self.wait_timeout:.0f} s: {exc}")
        raise AssertionError("unreachable")

    def _acquire(self, model: str | None, deadline: float) -> EndpointLoad:
        while True:
            try:
                return self.pool.acquire(model)
            except NoEndpointAvailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(WAIT_POLL)
                self.pool.refresh(force=True)

    def _send_once(self, request: httpx2.Request, origin: httpx2.URL, model: str | None,
                   deadline: float) -> httpx2.Response:
        load = self._acquire(model, deadline)
        self._route(request, origin, load)
        try:
            response = self.inner.handle_request(request)
        except FAILOVER_ERRORS as exc:
            raise self._failed(load, repr(exc)) from exc
        except BaseException:
            self.pool.release(load, ok=True)
            raise
        if response.status_code in FAILOVER_STATUSES:
            response.close()
            raise self._failed(load, f"HTTP {response.status_code}")
        response.stream = _ReleasingStream(
            response.stream, lambda: self.pool.release(load, ok=True))
        return response

    def close(self) -> None:
        self.inner.close()


class AsyncFailoverTransport(_FailoverPolicy, httpx2.AsyncBaseTransport):
    """Asynchronous transport for `openai.AsyncOpenAI`."""

    def __init__(self, pool: EndpointPool, *, wait_timeout: float = 600.0,
                 attempts: int | None = None, inner: httpx2.AsyncBaseTransport | None = None):
        super().__init__(pool, wait_timeout=wait_timeout, attempts=attempts)
        self.inner = inner or httpx2.AsyncHTTPTransport(limits=DEFAULT_LIMITS)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        await request.aread()
        model = self._model(request)
        origin = request.url
        deadline = time.monotonic() + self.wait_timeout
        try:
            try:  # the common case, without building a retry policy
                return await self._send_once(request, origin, model, deadline)
            except EndpointFailed:
                pass
            async for attempt in AsyncRetrying(**self._retry_policy(already=1)):
                with attempt:
                    return await self._send_once(request, origin, model, deadline)
        except EndpointFailed as exc:
            return self._give_up(request, f"fail-over gave up; last error: {exc}")
        except NoEndpointAvailable as exc:
            return self._give_up(request, f"no endpoint within {self.wait_timeout:.0f} s: {exc}")
        raise AssertionError("unreachable")

    async def _acquire(self, model: str | None, deadline: float) -> EndpointLoad:
        while True:
            try:
                return self.pool.acquire(model)
            except NoEndpointAvailable:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(WAIT_POLL)
                self.pool.refresh(force=True)

    async def _send_once(self, request: httpx2.Request, origin: httpx2.URL, model: str | None,
                         deadline: float) -> httpx2.Response:
        load = await self._acquire(model, deadline)
        self._route(request, origin, load)
        try:
            response = await self.inner.handle_async_request(request)
        except FAILOVER_ERRORS as exc:
            raise self._failed(load, repr(exc)) from exc
        except BaseException:
            self.pool.release(load, ok=True)
            raise
        if response.status_code in FAILOVER_STATUSES:
            await response.aclose()
            raise self._failed(load, f"HTTP {response.status_code}")
        response.stream = _AsyncReleasingStream(
            response.stream, lambda: self.pool.release(load, ok=True))
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
