"""A plain load generator: the raw capacity of endpoints, measured without nerschat.

Plain `openai.AsyncOpenAI` clients, one per endpoint, requests dealt round-robin with a fixed
number in flight. Used by the other benchmarks as the yardstick.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable

import openai

from nerschat.registry import Endpoint

Request = Callable[[openai.AsyncOpenAI, str, int], Awaitable[object]]


async def chat_request(client: openai.AsyncOpenAI, model: str, i: int) -> object:
    return await client.chat.completions.create(
        model=model, max_tokens=16, messages=[{"role": "user", "content": f"item {i}"}])


def corpus_text(i: int) -> str:
    """Document i of the synthetic corpus the embedding benchmarks use."""
    return f"passage {i} about topic {i % 97}"


async def embed_request(client: openai.AsyncOpenAI, model: str, i: int, batch: int = 32
                        ) -> object:
    """Batch i: the same texts `nerschat embed` sends for documents i*batch .. (i+1)*batch-1."""
    return await client.embeddings.create(
        model=model, input=[corpus_text(i * batch + j) for j in range(batch)],
        encoding_format="base64")


async def raw_rate(endpoints: list[Endpoint], requests: int, in_flight: int,
                   request: Request = chat_request) -> float:
    """Requests/s over the endpoints at `in_flight` concurrency (round-robin)."""
    clients = [openai.AsyncOpenAI(base_url=e.url, api_key=e.api_key, max_retries=0)
               for e in endpoints]
    targets = itertools.cycle(zip(clients, [e.model for e in endpoints]))
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            client, model = next(targets)
            await request(client, model, i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    for client in clients:
        await client.close()
    return requests / elapsed


async def sequential_rate(endpoint: Endpoint, requests: int) -> float:
    """The seed's approach: one plain client, one request at a time."""
    client = openai.AsyncOpenAI(base_url=endpoint.url, api_key=endpoint.api_key)
    started = time.perf_counter()
    for i in range(requests):
        await chat_request(client, endpoint.model, i)
    elapsed = time.perf_counter() - started
    await client.close()
    return requests / elapsed
