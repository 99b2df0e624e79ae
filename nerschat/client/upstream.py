"""HTTP/1.1 to the servers through aiohttp's client, under the httpx2 seam.

`AiohttpTransport` is an `httpx2.AsyncBaseTransport`, the default *inner* transport of the
client's `AsyncFailoverTransport` (workflows, `aconnect()`, the router): routing and fail-over
stay `nerschat.client`'s, only the bytes travel through aiohttp's connection pool. httpcore's
pool re-checks every connection it holds on each request (`has_expired`, a socket poll each),
so its cost per request grows with the connections open: at the several hundred a batch run
keeps to 4 replicas it took 58 % of the driver's CPU, and `nerschat run-batch` reached 132
requests/s (7.4 ms of CPU each) where a plain `AsyncOpenAI` per replica reached 236; over
aiohttp, 242 requests/s at 1.5 ms (4 stubs of 32 slots of 0.5 s, `benchmarks/workflows.py`).
Errors are mapped to the httpx2 exceptions the fail-over transport acts on: refused or
reset connections, timeouts and a server that hangs up mid-answer.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx2
from yarl import URL

UPSTREAM_CONNECTIONS = 1000


@functools.lru_cache(maxsize=64)
def _client_timeout(connect: float | None, read: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


def _timeouts(request: httpx2.Request) -> aiohttp.ClientTimeout:
    given: dict[str, Any] = request.extensions.get("timeout") or {}
    return _client_timeout(given.get("connect"), given.get("read"))


def _mapped(exc: BaseException, request: httpx2.Request, *, started: bool) -> Exception:
    """The httpx2 error for an aiohttp/asyncio one (`started`: the answer had begun)."""
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, aiohttp.ServerTimeoutError) or isinstance(exc, asyncio.TimeoutError):
        if isinstance(exc, aiohttp.ConnectionTimeoutError):
            return httpx2.ConnectTimeout(message, request=request)
        return httpx2.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return httpx2.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.ClientResponseError):
        return httpx2.RemoteProtocolError(message, request=request)
    if started:
        return httpx2.ReadError(message, request=request)
    return httpx2.ConnectError(message, request=request)


class _AiohttpStream(httpx2.AsyncByteStream):
    """An answer's body, chunk by chunk as it arrives; closing early drops the connection."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request):
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _mapped(exc, self._request, started=True) from exc

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # the connection goes back to the pool
        else:
            response.close()  # cut off mid-answer: the server sees its client go


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 to the servers through one `aiohttp.ClientSession` (made on first use)."""

    def __init__(self, connections: int = UPSTREAM_CONNECTIONS):
        self.connections = connections
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, bytes, bytes], URL] = {}  # upstream URLs repeat: parse each once

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.connections, limit_per_host=0,
                                             ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))
        return self._session

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send `request` upstream; the answer's body streams on demand."""
        session = self._open()
        raw_url = (request.url.scheme, request.url.netloc, request.url.raw_path)
        url = self._urls.get(raw_url)
        if url is None:
            if len(self._urls) > 10000:
                self._urls.clear()
            url = self._urls[raw_url] = URL(str(request.url), encoded=True)
        try:
            response = await session.request(
                request.method, url, headers=request.headers.multi_items(),
                data=request.content, timeout=_timeouts(request), allow_redirects=False)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise _mapped(exc, request, started=False) from exc
        return httpx2.Response(response.status, headers=list(response.raw_headers),
                               stream=_AiohttpStream(response, request), request=request)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None
