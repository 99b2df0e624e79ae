"""Judge workflow throughput vs the raw capacity of the same stub replicas, in one run.

Stub replicas of known capacity (C requests served at once, L seconds each) stand in for
vLLM, so the ceiling is known: replicas * C / L requests/s. For 1 and 4 replicas this prints
- raw: a plain load generator at saturation (2C in flight per replica),
- judge: `nerschat judge` (in-process shard) on the same replicas; each item is 2 requests,
- seed: one request at a time with a plain OpenAI client (how the original demo worked),
and the ratios judge/raw (target >= 0.9) and judge/seed.

    python benchmarks/judge_throughput.py [--capacity 32] [--latency 1.0] [--items 600]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from loadgen import raw_rate, sequential_rate
from rich.console import Console

from nerschat.testing.fleet import stub_fleet
from nerschat.workflows.judge import JudgeOptions
from nerschat.workflows.orchestrate import run_items
from nerschat.workflows.tasks import JudgeTask

REQUESTS_PER_ITEM = 2  # reasoning, then the constrained choice


def write_items(path: Path, count: int) -> None:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"q{i}", "question": f"Is {i} even?",
                                     "answers": ["yes", "no"]}) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=32)
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--items", type=int, default=600, help="items per replica")
    args = parser.parse_args()
    console = Console(stderr=True)
    rows = []
    for replicas in (1, 4):
        with tempfile.TemporaryDirectory() as tmp, stub_fleet(Path(tmp) / "reg") as fleet:
            endpoints = fleet.start_ready(replicas, "bench", latency=args.latency,
                                          capacity=args.capacity)
            items = args.items * replicas
            in_flight = 2 * replicas * args.capacity  # saturation: a full queue at every server
            raw = asyncio.run(raw_rate(endpoints, items * REQUESTS_PER_ITEM, in_flight))
            write_items(Path(tmp) / "in.jsonl", items)
            report = run_items(
                JudgeTask(JudgeOptions(model="bench", reasoning_tokens=16)),
                Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl", registry=str(fleet.registry.path),
                model="bench", show_progress=False, console=console)
            judge = report.items_per_second * REQUESTS_PER_ITEM
            seed = asyncio.run(sequential_rate(endpoints[0], 10))
            rows.append((replicas, replicas * args.capacity / args.latency, raw, judge, seed))
    print(f"stub replicas: capacity {args.capacity} in flight, {args.latency} s per request")
    print(f"{'replicas':>8} {'ceiling':>9} {'raw':>9} {'judge':>9} {'seed':>7} "
          f"{'judge/raw':>10} {'judge/seed':>11}   (requests/s)")
    for replicas, ceiling, raw, judge, seed in rows:
        print(f"{replicas:>8} {ceiling:>9.1f} {raw:>9.1f} {judge:>9.1f} {seed:>7.2f} "
              f"{judge / raw:>10.3f} {judge / seed:>11.1f}")


if __name__ == "__main__":
    main()
