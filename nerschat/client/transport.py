"""httpx2 transports that route OpenAI SDK requests through the routing core.

They sit under an unchanged `openai.OpenAI` / `openai.AsyncOpenAI` (or any `httpx2` client:
`httpx2.AsyncClient(transport=AsyncFailoverTransport(pool))`), so any OpenAI code gains
discovery, least-outstanding load balancing and fail-over without changes. The decisions live
in `nerschat.client.routing`; these classes only wait (blocking or asyncio) and move bytes:

- connection refused/reset, no response headers within the progress deadline from a replica
  that has stalled, 500/502/503/504, or a 200 reply that is not the API's JSON cools the
  endpoint down and retries on another replica, with back-off and jitter, re-reading the
  registry, until the wait deadline (`RoutingSettings.wait_timeout`);
- when no replica is usable, the request waits for one (up to the same deadline);
- once a response is handed to the caller it is never retried (streams included); a stream
  whose replica goes silent for `idle_timeout` ends with `httpx2.ReadTimeout`;
- when fail-over gives up, the caller gets a 503 marked `x-should-retry: false`, so the SDK's
  own `max_retries` does not multiply the attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, cast

import httpx2
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_random_exponential,
)

from nerschat.client.routing import (
    AFFINITY_HEADER,
    DIMENSION_HEADER,
    FAILOVER_STATUSES,
    WRONG_SERVER_STATUSES,
    EndpointFailed,
    EndpointLoad,
    EndpointPool,
    NoEndpointAvailable,
    Outcome,
    RoutingPolicy,
    RoutingSettings,
    is_streamed,
    model_of,
    reply_problem,
)
from nerschat.client.upstream import AiohttpTransport

FAILOVER_ERRORS: tuple[type[Exception], ...] = (
    httpx2.ConnectError,
    httpx2.ConnectTimeout,
    httpx2.ReadError,
    httpx2.ReadTimeout,
    httpx2.WriteError,
    httpx2.RemoteProtocolError,
)
DEFAULT_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000)
"""Connections of one blocking client (the async one goes over aiohttp:
`nerschat.client.upstream`). Every connection may be kept alive: closing all above a smaller
keep-alive cap after each reply makes a new TCP connection per request once many are in
flight, and their SYNs overflow the servers' accept queues."""
WAIT_POLL = 0.2
BACKOFF = wait_random_exponential(multiplier=0.05, max=1.0)


def _settings(settings: RoutingSettings | None, wait_timeout: float | None,
              attempts: int | None) -> RoutingSettings:
    base = settings or RoutingSettings()
    changes: dict[str, Any] = {}
    if wait_timeout is not None:
        changes["wait_timeout"] = wait_timeout
    if attempts is not None:
        changes["max_attempts"] = attempts
    if not changes:
        return base
    return dataclasses.replace(base, **changes)


class _Attempt:
    """What one request carries from attempt to attempt."""

    __slots__ = ("request", "origin", "model", "affinity", "streamed", "expects_json",
                 "deadline", "server_errors", "wrong_server", "abandoned", "last_error")

    def __init__(self, policy: RoutingPolicy, request: httpx2.Request):
        content = request.content
        self.request = request
        self.origin = request.url
        self.model = policy.model(content)
        self.affinity = request.headers.get(AFFINITY_HEADER)
        self.streamed = is_streamed(content)
        self.expects_json = not self.streamed and policy.expects_json(request)
        self.deadline = time.monotonic() + policy.settings.wait_timeout
        self.server_errors = 0
        self.wrong_server = 0
        self.abandoned = 0
        self.last_error: BaseException | None = None

    def first_byte_limit(self, settings: RoutingSettings) -> float | None:
        """The first-byte deadline (seconds, None = none) of the next attempt.

        A request is abandoned for silence once (a long generation may look like a stall; the
        second replica gets to finish it), unless the deadlines are strict.
        """
        if self.abandoned and not settings.strict_deadlines:
            return None
        return settings.first_byte_timeout


class _FailoverBase:
    """What both transports share on top of the policy."""

    def __init__(self, pool: EndpointPool, settings: RoutingSettings):
        self.pool = pool
        self.policy = RoutingPolicy(pool, settings)

    @property
    def settings(self) -> RoutingSettings:
        return self.policy.settings

    @property
    def wait_timeout(self) -> float:
        return self.policy.settings.wait_timeout

    def _stop(self, attempt: _Attempt) -> Callable[[RetryCallState], bool]:
        return lambda state: self.policy.out_of_attempts(state.attempt_number + 1,
                                                         attempt.deadline)

    @staticmethod
    def _remember(attempt: _Attempt) -> Callable[[RetryCallState], None]:
        def remember(state: RetryCallState) -> None:
            if state.outcome is not None:
                attempt.last_error = state.outcome.exception()
        return remember

    def _give_up_failed(self, attempt: _Attempt, exc: BaseException) -> httpx2.Response:
        return self.policy.give_up(attempt.request, f"fail-over gave up; last error: {exc}")

    def _give_up_waiting(self, attempt: _Attempt) -> httpx2.Response:
        if attempt.last_error is not None:
            return self._give_up_failed(attempt, attempt.last_error)
        reason = self.pool.describe(attempt.model)
        return self.policy.give_up(
            attempt.request, f"no endpoint within {self.wait_timeout:.0f} s: {reason}")

    def _server_error(self, attempt: _Attempt, load: EndpointLoad, status: int) -> bool:
        """Whether a 5xx, 401 or 404 goes to another replica.

        A 401/404 goes elsewhere while a peer serving the model is usable (this replica is not
        the server its entry names), twice at most (a 401/404 everywhere is the request's own).

        A 500 goes elsewhere only while another replica is usable right now (a sole broken
        replica's 500 is the caller's at once, not after its cool-down), and only once (a 500
        from two replicas is the request's own).
        """
        if status in WRONG_SERVER_STATUSES:
            attempt.wrong_server += 1
            return attempt.wrong_server < 3 and self.pool.has_alternative(load, attempt.model)
        if status not in FAILOVER_STATUSES:
            return False
        if status == 500:
            attempt.server_errors += 1
            return attempt.server_errors < 2 and self.pool.has_alternative(load, attempt.model)
        return True

    def _check_reply(self, attempt: _Attempt, response: httpx2.Response, body: bytes) -> str | None:
        if response.status_code != 200 or not attempt.expects_json:
            return None
        named = attempt.request.headers.get(DIMENSION_HEADER, "")
        problem = reply_problem(attempt.origin.path, body, attempt.request.content,
                                int(named) if named.isdigit() else None)
        if problem is not None and response.headers.get("content-encoding", "identity") not in (
                "identity", ""):
            return None  # compressed: the caller's client decodes and judges it
        return problem

    @staticmethod
    def _rebuilt(response: httpx2.Response, request: httpx2.Request,
                 raw: bytes) -> httpx2.Response:
        """The same response with its body, read here, in memory (still raw, undecoded)."""
        response.stream = httpx2.ByteStream(raw)
        return response


# -- synchronous ------------------------------------------------------------------------


class _ReleasingStream(httpx2.SyncByteStream):
    """A streamed reply: marks progress per chunk, records the outcome when closed."""

    def __init__(self, inner: Any, pool: EndpointPool, load: EndpointLoad, status: int):
        self._inner = inner
        self._pool = pool
        self._load: EndpointLoad | None = load
        self._outcome: Outcome = "error" if status >= 500 else "ok"

    def __iter__(self) -> Iterator[bytes]:
        load = self._load
        try:
            for chunk in self._inner:
                if load is not None:
                    load.last_progress = time.monotonic()
                yield chunk
        except FAILOVER_ERRORS:
            self._outcome = "failed"
            raise

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            load, self._load = self._load, None
            if load is not None:
                self._pool.release(load, self._outcome)


class FailoverTransport(_FailoverBase, httpx2.BaseTransport):
    """Synchronous transport for `openai.OpenAI`.

    Blocking reads cannot be watched from outside, so here the progress deadline is the
    read timeout of each attempt that does not stream (`first_byte_timeout`, or the
    caller's own if shorter); when it expires on a replica that is still making progress,
    the request is sent once more without it. Streams keep the caller's own read timeout.
    """

    def __init__(self, pool: EndpointPool, *, wait_timeout: float | None = None,
                 attempts: int | None = None, inner: httpx2.BaseTransport | None = None,
                 settings: RoutingSettings | None = None):
        super().__init__(pool, _settings(settings, wait_timeout, attempts))
        self.inner = inner or httpx2.HTTPTransport(limits=DEFAULT_LIMITS)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` to a ready replica, failing over to others on errors and stalls.

        Gives up with a 503 reply (`x-should-retry: false`) once the wait budget or the attempt
        cap is spent; streamed replies release their replica when the stream closes.
        """
        request.read()
        attempt = _Attempt(self.policy, request)
        try:
            try:  # the common case, without building a retry policy
                return self._send_once(attempt)
            except EndpointFailed as exc:
                attempt.last_error = exc
                if self.policy.out_of_attempts(1, attempt.deadline):
                    raise
            for retry in Retrying(stop=self._stop(attempt), wait=BACKOFF, reraise=True,
                                  before_sleep=self._remember(attempt),
                                  retry=retry_if_exception_type(EndpointFailed)):
                with retry:
                    return self._send_once(attempt)
        except EndpointFailed as exc:
            return self._give_up_failed(attempt, exc)
        except NoEndpointAvailable:
            return self._give_up_waiting(attempt)
        raise AssertionError("unreachable")

    def _acquire(self, attempt: _Attempt) -> EndpointLoad:
        while True:
            load = self.pool.try_acquire(attempt.model, attempt.affinity)
            if load is not None:
                return load
            if time.monotonic() >= attempt.deadline:
                raise NoEndpointAvailable("")
            time.sleep(WAIT_POLL)
            self.pool.refresh(force=True)

    def _send_once(self, attempt: _Attempt) -> httpx2.Response:
        load = self._acquire(attempt)
        request = attempt.request
        self.policy.route(request, attempt.origin, load)
        # A blocking stream cannot be resumed after a read timeout: streams keep the SDK's.
        limit = None if attempt.streamed else attempt.first_byte_limit(self.settings)
        original = request.extensions.get("timeout")
        if limit is not None:
            timeouts = dict(original or {})
            read = timeouts.get("read")
            timeouts["read"] = limit if read is None else min(read, limit)
            request.extensions["timeout"] = timeouts
        sent = time.monotonic()
        try:
            response = self.inner.handle_request(request)
            if not attempt.streamed:
                raw = _read_all(response)
                response = self._rebuilt(response, request, raw)
            else:
                raw = None
        except httpx2.ReadTimeout as exc:
            # The read timeout itself says `limit` s passed without a byte on this attempt.
            if limit is not None and not (self.settings.strict_deadlines or self.pool.stalled(
                    load, max(sent, load.last_progress))):
                # The replica is alive, only this request is slow: no nerschat deadline now.
                self.pool.release(load, "ok")
                if original is None:
                    request.extensions.pop("timeout", None)
                else:
                    request.extensions["timeout"] = original
                return self._send_without_deadline(attempt)
            attempt.abandoned += 1
            raise self.policy.failed(load, f"no progress for {limit} s ({exc!r})") from exc
        except FAILOVER_ERRORS as exc:
            raise self.policy.failed(load, repr(exc)) from exc
        except BaseException:
            self.pool.release(load, "ok")
            raise
        finally:
            if original is None:
                request.extensions.pop("timeout", None)
            else:
                request.extensions["timeout"] = original
        self.pool.progress(load, sent)
        return self._finish(attempt, load, response, raw)

    def _send_without_deadline(self, attempt: _Attempt) -> httpx2.Response:
        load = self._acquire(attempt)
        self.policy.route(attempt.request, attempt.origin, load)
        try:
            response = self.inner.handle_request(attempt.request)
            raw = None
            if not attempt.streamed:
                raw = _read_all(response)
                response = self._rebuilt(response, attempt.request, raw)
        except FAILOVER_ERRORS as exc:
            raise self.policy.failed(load, repr(exc)) from exc
        except BaseException:
            self.pool.release(load, "ok")
            raise
        self.pool.progress(load)
        return self._finish(attempt, load, response, raw)

    def _finish(self, attempt: _Attempt, load: EndpointLoad, response: httpx2.Response,
                raw: bytes | None) -> httpx2.Response:
        status = response.status_code
        if self._server_error(attempt, load, status):
            response.close()
            raise self.policy.failed(load, f"HTTP {status}",
                                     eject=status in WRONG_SERVER_STATUSES)
        if raw is not None:
            problem = self._check_reply(attempt, response, raw)
            if problem is None:
                self.pool.release(load, "error" if status >= 500 else "ok")
            elif self.pool.has_alternative(load, attempt.model):
                raise self.policy.failed(load, problem, eject=True)
            else:  # the caller's parser reports it as this item's error
                self.pool.release(load, "error")
            return response
        response.stream = _ReleasingStream(response.stream, self.pool, load, status)
        return response

    def close(self) -> None:
        """Close the inner transport's connections."""
        self.inner.close()


# -- asynchronous -----------------------------------------------------------------------


class _Watchdog:
    """Cancels the current task when its attempt has been silent too long on a stalled replica.

    One timer per attempt (not per chunk): `touch()` only records the time; the timer, when
    due, either reschedules itself or cancels.
    """

    def __init__(self, policy: RoutingPolicy, load: EndpointLoad, limit: float | None):
        self.policy = policy
        self.load = load
        self.limit = limit
        self.since = time.monotonic()
        self.fired = False
        self._task = asyncio.current_task()
        self._handle: asyncio.TimerHandle | None = None
        self._schedule()

    def _schedule(self) -> None:
        delay = self.policy.next_check(self.load, self.since, self.limit)
        if delay is not None and self._task is not None:
            self._handle = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        self._handle = None
        if self.policy.abandon(self.load, self.since, time.monotonic(), self.limit):
            self.fired = True
            assert self._task is not None
            self._task.cancel(msg="nerschat progress deadline")
        else:
            self._schedule()

    def touch(self, limit: float | None = None) -> None:
        """Progress: measure the next silence from now (with a new limit if given)."""
        self.since = time.monotonic()
        if limit is not None and limit != self.limit:
            self.limit = limit
            self.stop()
            self._schedule()
        elif self._handle is None and not self.fired:
            self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def claim(self) -> bool:
        """After a CancelledError: True if only this watchdog caused it (the cancel is undone)."""
        if not self.fired:
            return False
        self.fired = False
        uncancel = getattr(self._task, "uncancel", None)  # Python >= 3.11
        return uncancel is None or uncancel() == 0


class _AsyncReleasingStream(httpx2.AsyncByteStream):
    """A streamed reply: watched for idle gaps, records the outcome when closed."""

    def __init__(self, inner: Any, policy: RoutingPolicy, load: EndpointLoad, status: int):
        self._inner = inner
        self._policy = policy
        self._load: EndpointLoad | None = load
        self._outcome: Outcome = "error" if status >= 500 else "ok"

    async def __aiter__(self) -> AsyncIterator[bytes]:
        load = self._load
        if load is None:
            return
        watchdog = _Watchdog(self._policy, load, self._policy.settings.idle_timeout)
        iterator = self._inner.__aiter__()
        try:
            while True:
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if watchdog.claim():
                        self._outcome = "failed"
                        raise httpx2.ReadTimeout(
                            f"nerschat: no data for {watchdog.limit} s from endpoint "
                            f"{load.id}") from None
                    raise
                except FAILOVER_ERRORS:
                    self._outcome = "failed"
                    raise
                load.last_progress = time.monotonic()
                watchdog.stop()  # the caller's own time between chunks is not the replica's
                yield chunk
                watchdog.touch()
        finally:
            watchdog.stop()

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            load, self._load = self._load, None
            if load is not None:
                self._policy.pool.release(load, self._outcome)


class AsyncFailoverTransport(_FailoverBase, httpx2.AsyncBaseTransport):
    """Asynchronous transport for `openai.AsyncOpenAI` and any `httpx2.AsyncClient`.

    `AsyncFailoverTransport(pool)` alone is enough (default `RoutingSettings`); the pool's
    `stats()` gives per-endpoint counters for metrics. The bytes go through `inner`, by
    default aiohttp's connection pool (`nerschat.client.upstream.AiohttpTransport`, made on
    first use in the running event loop): close the client (`aclose`) when done with it.
    """

    def __init__(self, pool: EndpointPool, *, wait_timeout: float | None = None,
                 attempts: int | None = None, inner: httpx2.AsyncBaseTransport | None = None,
                 settings: RoutingSettings | None = None):
        super().__init__(pool, _settings(settings, wait_timeout, attempts))
        self.inner = inner or AiohttpTransport()

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Async twin of `FailoverTransport.handle_request`, same fail-over and 503 rules."""
        await request.aread()
        attempt = _Attempt(self.policy, request)
        try:
            try:  # the common case, without building a retry policy
                return await self._send_once(attempt)
            except EndpointFailed as exc:
                attempt.last_error = exc
                if self.policy.out_of_attempts(1, attempt.deadline):
                    raise
            async for retry in AsyncRetrying(stop=self._stop(attempt), wait=BACKOFF,
                                             reraise=True,
                                             before_sleep=self._remember(attempt),
                                             retry=retry_if_exception_type(EndpointFailed)):
                with retry:
                    return await self._send_once(attempt)
        except EndpointFailed as exc:
            return self._give_up_failed(attempt, exc)
        except NoEndpointAvailable:
            return self._give_up_waiting(attempt)
        raise AssertionError("unreachable")

    async def _acquire(self, attempt: _Attempt) -> EndpointLoad:
        while True:
            load = self.pool.try_acquire(attempt.model, attempt.affinity)
            if load is not None:
                return load
            if time.monotonic() >= attempt.deadline:
                raise NoEndpointAvailable("")
            await asyncio.sleep(WAIT_POLL)
            self.pool.refresh(force=True)

    async def _send_once(self, attempt: _Attempt) -> httpx2.Response:
        load = await self._acquire(attempt)
        request = attempt.request
        self.policy.route(request, attempt.origin, load)
        settings = self.settings
        watchdog = _Watchdog(self.policy, load, attempt.first_byte_limit(settings))
        raw: bytes | None = None
        try:
            response = await self.inner.handle_async_request(request)
            self.pool.progress(load, watchdog.since)
            if not attempt.streamed:  # read here: checked, and failed over if bad
                watchdog.touch(settings.idle_timeout)
                stream = cast(httpx2.AsyncByteStream, response.stream)  # an async transport's
                try:
                    raw = b"".join([chunk async for chunk in stream])
                finally:
                    with contextlib.suppress(Exception):
                        await stream.aclose()
                response = self._rebuilt(response, request, raw)
        except asyncio.CancelledError:
            if watchdog.claim():
                attempt.abandoned += 1
                raise self.policy.failed(
                    load, f"no progress for {watchdog.limit} s (replica stalled)") from None
            self.pool.release(load, "ok")
            raise
        except FAILOVER_ERRORS as exc:
            raise self.policy.failed(load, repr(exc)) from exc
        except BaseException:
            self.pool.release(load, "ok")
            raise
        finally:
            watchdog.stop()
        status = response.status_code
        if self._server_error(attempt, load, status):
            await response.aclose()
            raise self.policy.failed(load, f"HTTP {status}",
                                     eject=status in WRONG_SERVER_STATUSES)
        if raw is not None:
            problem = self._check_reply(attempt, response, raw)
            if problem is None:
                self.pool.release(load, "error" if status >= 500 else "ok")
            elif self.pool.has_alternative(load, attempt.model):
                raise self.policy.failed(load, problem, eject=True)
            else:  # the caller's parser reports it as this item's error
                self.pool.release(load, "error")
            return response
        response.stream = _AsyncReleasingStream(response.stream, self.policy, load, status)
        return response

    async def aclose(self) -> None:
        """Close the inner transport's connections."""
        await self.inner.aclose()


def _read_all(response: httpx2.Response) -> bytes:
    """The whole body of a sync transport's reply (its stream is then closed)."""
    stream = cast(httpx2.SyncByteStream, response.stream)
    try:
        return b"".join(stream)
    finally:
        stream.close()


__all__ = ["AsyncFailoverTransport", "EndpointFailed", "FailoverTransport", "model_of"]
