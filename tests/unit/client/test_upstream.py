"""The router's aiohttp upstream transport raises what the fail-over transport acts on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx2
import pytest

from nerschat.client.transport import FAILOVER_ERRORS
from nerschat.client.upstream import AiohttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(handler: Handler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/x"
    finally:
        server.close()


def request(url: str, read: float = 5.0) -> httpx2.Request:
    return httpx2.Request("POST", url, content=b"{}",
                          extensions={"timeout": {"connect": 5.0, "read": read}})


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    transport = AiohttpTransport()
    with pytest.raises(httpx2.ConnectError):
        await transport.handle_async_request(request(f"http://127.0.0.1:{port}/x"))
    await transport.aclose()


async def head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(2)


@pytest.mark.parametrize("behaviour", ["hang", "hang-up", "cut-body"])
async def test_failures_map_to_failover_errors(behaviour: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head(reader)
        if behaviour == "hang":
            await asyncio.sleep(5)
        elif behaviour == "cut-body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            await writer.drain()
        writer.close()

    transport = AiohttpTransport()
    async for url in serve(handler):
        with pytest.raises(FAILOVER_ERRORS) as raised:
            response = await transport.handle_async_request(request(url, read=0.5))
            async for _ in response.stream:  # type: ignore[union-attr]
                pass
        expected = {"hang": httpx2.ReadTimeout, "hang-up": httpx2.RemoteProtocolError,
                    "cut-body": httpx2.RemoteProtocolError}[behaviour]
        assert isinstance(raised.value, expected), repr(raised.value)
    await transport.aclose()


async def test_answer_streams_chunk_by_chunk() -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    transport = AiohttpTransport()
    async for url in serve(handler):
        response = await transport.handle_async_request(request(url))
        chunks = response.stream.__aiter__()  # type: ignore[union-attr]
        assert await asyncio.wait_for(chunks.__anext__(), 5) == b"first"  # before the rest
        release.set()
        assert await chunks.__anext__() == b"second"
        await response.aclose()
    await transport.aclose()
