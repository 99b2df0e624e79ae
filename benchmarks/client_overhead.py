"""Requests/s of `aconnect()` vs a plain `openai.AsyncOpenAI`, same stub, same concurrency.

One zero-latency stub pilot; rounds alternate between the two clients so that machine noise
hits both alike. Prints the throughput ratio (target >= 0.9) and the added latency/request.

    python benchmarks/client_overhead.py [--requests 3000] [--concurrency 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import openai

import nerschat
from nerschat.testing.fleet import stub_fleet


async def drive(client: openai.AsyncOpenAI, model: str, requests: int, concurrency: int) -> float:
    """Requests/s for `requests` chat completions with `concurrency` in flight."""
    queue = iter(range(requests))

    async def worker() -> None:
        for i in queue:
            await client.chat.completions.create(
                model=model, max_tokens=8, messages=[{"role": "user", "content": f"item {i}"}])

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return requests / (time.perf_counter() - start)


async def sequential_latency(client: openai.AsyncOpenAI, model: str, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        await client.chat.completions.create(
            model=model, max_tokens=8, messages=[{"role": "user", "content": f"item {i}"}])
    return (time.perf_counter() - start) / n


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, stub_fleet(tmp) as fleet:
        (endpoint,) = fleet.start_ready(1, model="bench", capacity=4096)
        plain = openai.AsyncOpenAI(base_url=endpoint.url, api_key=endpoint.api_key)
        routed = nerschat.aconnect("bench", registry=tmp, wait_timeout=30)
        for client in (plain, routed):  # warm up connections and imports
            await drive(client, "bench", 200, args.concurrency)
        rates: dict[str, list[float]] = {"plain": [], "nerschat": []}
        lat: dict[str, list[float]] = {"plain": [], "nerschat": []}
        for _ in range(args.rounds):
            for name, client in (("plain", plain), ("nerschat", routed)):
                rates[name].append(await drive(client, "bench", args.requests, args.concurrency))
                lat[name].append(await sequential_latency(client, "bench", args.latency_requests))
        plain_rate, routed_rate = (statistics.median(rates[k]) for k in ("plain", "nerschat"))
        plain_lat, routed_lat = (statistics.median(lat[k]) for k in ("plain", "nerschat"))
        print(f"concurrency {args.concurrency}, {args.requests} requests x {args.rounds} rounds")
        print(f"plain AsyncOpenAI   : {plain_rate:8.0f} req/s   {plain_lat * 1e3:6.2f} ms/request alone")
        print(f"nerschat.aconnect() : {routed_rate:8.0f} req/s   {routed_lat * 1e3:6.2f} ms/request alone")
        print(f"throughput ratio    : {routed_rate / plain_rate:.3f}  (target >= 0.9)")
        print(f"added latency       : {(routed_lat - plain_lat) * 1e3:+.3f} ms/request")
        await plain.close()
        await routed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-requests", type=int, default=200)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
