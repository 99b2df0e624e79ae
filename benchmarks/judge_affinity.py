"""Judging throughput and the engine's prefix-cache hit rate, with and without affinity.

Runs one judging mode over fresh items twice per round, once with the `X-Nerschat-Affinity`
header and once without (rounds alternate the order), against whatever vLLM endpoints of
`--model` are ready in the registry, and prints items/s and the prefix-cache hit rate the
engines report (`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`, tokens),
side by side. Each arm gets its own items (distinct question text), so one arm never warms
the cache for the other.

    nerschat serve --engine vllm --model local:gemma-3-270m &            # one or more replicas
    ../.venv/bin/python judge_affinity.py --model gemma-3-270m --mode pairwise --items 16

The hit rate only counts full KV blocks: vLLM's CPU backend defaults to 128-token blocks, so
prompts shorter than a block never hit (pass `-- --block-size 32` to `nerschat serve`, or use
`--padding` here to make the shared part of the prompt longer). With a single replica the
two arms route alike; the header matters once the transport honours it over several replicas.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import httpx2

import nerschat
from nerschat.judging import make_task
from nerschat.registry import Registry


def items(mode: str, count: int, tag: str, padding: int) -> list[dict[str, Any]]:
    context = " ".join(f"Background fact {k}: the value of item {k} is {k * 7}." for k in
                       range(padding))
    lines = []
    for i in range(count):
        question = f"[{tag}-{i}] {context} Using the facts, what is {i} times 7?"
        line: dict[str, Any] = {"id": f"{tag}-{i}", "question": question}
        if mode == "pairwise":
            line.update(answer_a=str(7 * i), answer_b=str(7 * i + 1))
        elif mode == "best-of":
            line.update(answers=[str(7 * i), str(7 * i + 2)])
        else:
            line.update(answer=str(7 * i))
        lines.append(line)
    return lines


def cache_counters(registry: Registry, model: str) -> tuple[float, float, str]:
    """(hits, queries, block sizes) summed over the ready endpoints of `model`."""
    hits = queries = 0.0
    blocks = set()
    for entry in registry.scan().entries:
        if entry.model != model or entry.state != "ready":
            continue
        text = httpx2.get(entry.url.removesuffix("/v1") + "/metrics", timeout=10).text
        for line in text.splitlines():
            if line.startswith("vllm:prefix_cache_hits_total"):
                hits += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:prefix_cache_queries_total"):
                queries += float(line.rsplit(" ", 1)[1])
            elif line.startswith("vllm:cache_config_info") and 'block_size="' in line:
                blocks.add(line.split('block_size="', 1)[1].split('"', 1)[0])
    return hits, queries, ",".join(sorted(blocks)) or "?"


async def run_arm(client: Any, mode: str, model: str, lines: list[dict[str, Any]],
                  affinity: bool, in_flight: int, reasoning_tokens: int) -> float:
    task = make_task(mode, model=model, affinity=affinity, reasoning_tokens=reasoning_tokens)
    parsed = [task.parse(line) for line in lines]
    gate = asyncio.Semaphore(in_flight)

    async def one(item: Any) -> dict[str, Any]:
        async with gate:
            return await task.judge(client, item)

    started = time.perf_counter()
    results = await asyncio.gather(*(one(item) for item in parsed))
    elapsed = time.perf_counter() - started
    failed = [r for r in results if r.get("error")]
    if failed:
        print(f"  {len(failed)} error(s), e.g. {failed[0]['error']}")
    return len(lines) / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--registry", default=None)
    parser.add_argument("--mode", default="pairwise",
                        choices=("best-of", "pairwise", "score", "classify"))
    parser.add_argument("--items", type=int, default=16, help="items per arm and round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--reasoning-tokens", type=int, default=16)
    parser.add_argument("--padding", type=int, default=0,
                        help="background sentences added to each question (longer prompts)")
    args = parser.parse_args()
    registry = Registry(args.registry) if args.registry else Registry()
    client = nerschat.aconnect(args.model, registry=registry)
    totals: dict[bool, dict[str, float]] = {
        arm: {"rate": 0.0, "hits": 0.0, "queries": 0.0} for arm in (True, False)}
    block = "?"
    # warm-up (not counted): the engine compiles kernels for new shapes on first requests
    await run_arm(client, args.mode, args.model, items(args.mode, 2, f"warm-{time.time_ns()}",
                                                       args.padding),
                  True, args.in_flight, args.reasoning_tokens)
    for round_number in range(args.rounds):
        arms = (True, False) if round_number % 2 == 0 else (False, True)
        for affinity in arms:
            tag = f"r{round_number}-{'aff' if affinity else 'plain'}-{time.time_ns()}"
            before = cache_counters(registry, args.model)
            rate = await run_arm(client, args.mode, args.model,
                                 items(args.mode, args.items, tag, args.padding), affinity,
                                 args.in_flight, args.reasoning_tokens)
            after = cache_counters(registry, args.model)
            block = after[2]
            totals[affinity]["rate"] += rate / args.rounds
            totals[affinity]["hits"] += after[0] - before[0]
            totals[affinity]["queries"] += after[1] - before[1]
    print(f"mode {args.mode}, {args.items} items x {args.rounds} rounds per arm, "
          f"KV block size {block}, padding {args.padding}")
    print(f"{'arm':<14}{'items/s':>10}{'prefix-cache hit rate':>24}")
    for affinity in (True, False):
        t = totals[affinity]
        hit = t["hits"] / t["queries"] if t["queries"] else 0.0
        print(f"{'affinity' if affinity else 'no affinity':<14}{t['rate']:>10.2f}"
              f"{hit:>23.1%} ({t['hits']:.0f}/{t['queries']:.0f} tokens)")
    ratio = totals[True]["rate"] / totals[False]["rate"] if totals[False]["rate"] else 0.0
    print(f"throughput ratio affinity / none: {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
