"""run-batch, judge and embed vs a plain AsyncOpenAI generator on the same stubs, in one run.

Stub replicas of known capacity (C slots of L seconds each) stand in for vLLM/TEI. For 1 and
4 replicas, and for a stub whose capacity counts requests and one whose capacity counts texts
(an embedding request of n texts holds n slots), this prints the rate of
- plain: `openai.AsyncOpenAI`, one client per replica, 2C requests in flight per replica,
- run-batch, judge (two requests per item) and embed (requests of the endpoint's batch size),
  each with default settings, wall time from the call to the merged output,
and each ratio to the plain generator (goal >= 0.95), with the CPU share of the driver
process and the load average (a driver that is CPU-bound measures the machine, not nerschat).

    python benchmarks/workflows.py [--capacity 32] [--latency 0.5] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import openai
from loadgen import Request, chat_request, corpus_text, embed_request, raw_rate
from rich.console import Console

from nerschat.registry import Endpoint
from nerschat.testing.fleet import stub_fleet
from nerschat.workflows.core import run_items
from nerschat.workflows.embed import DEFAULT_BATCH, EmbedOptions, run_embed
from nerschat.workflows.judge import JudgeOptions
from nerschat.workflows.tasks import BatchTask, JudgeTask

QUIET = Console(stderr=True, quiet=True)
CPU_BOUND = 0.85  # share of one core above which the driver itself limits the rate


def batch_file(path: Path, count: int) -> None:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({
                "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "bench", "max_tokens": 16,
                         "messages": [{"role": "user", "content": f"item {i}"}]}}) + "\n")


def judge_file(path: Path, count: int) -> None:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"q{i}", "question": f"Is {i} even?",
                                     "answers": ["yes", "no"]}) + "\n")


def corpus_file(path: Path, count: int) -> None:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"d{i}", "text": corpus_text(i)}) + "\n")


def retrying(request: Request) -> Request:
    """`request` retried on a connect/read timeout (as the SDK's default max_retries would):
    a busy shared machine must not end the measurement."""
    async def once_more(client: openai.AsyncOpenAI, model: str, i: int) -> object:
        for attempt in range(3):
            try:
                return await request(client, model, i)
            except (openai.APITimeoutError, openai.APIConnectionError):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    return once_more


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU share of this process: CPU seconds / wall seconds) of `action`."""
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return wall, used / wall


Rates = dict[str, tuple[float, float, float, float]]
"""{workload: (plain rate, nerschat rate, plain CPU share, nerschat CPU share)}"""


def measure(llm: list[Endpoint], emb: list[Endpoint], registry: str, tmp: Path,
            capacity: int, latency: float, seconds: float, workloads: list[str],
            unit: str = "requests") -> Rates:
    """Rates in requests/s (embed: texts/s) of the plain generator and of nerschat."""
    replicas = len(llm)
    in_flight = 2 * capacity * replicas
    requests = int(seconds * replicas * capacity / latency)
    rates: Rates = {}
    if {"run-batch", "judge"} & set(workloads):
        wall, plain_cpu = timed(lambda: asyncio.run(raw_rate(llm, requests, in_flight,
                                                             retrying(chat_request))))
        plain_chat = requests / wall
    if "run-batch" in workloads:
        batch_file(tmp / "batch.jsonl", requests)
        wall, cpu = timed(lambda: run_items(BatchTask(), tmp / "batch.jsonl", tmp / "batch.out",
                                            registry=registry, console=QUIET,
                                            show_progress=False))
        rates["run-batch"] = (plain_chat, requests / wall, plain_cpu, cpu)
    if "judge" in workloads:
        items = requests // 2
        judge_file(tmp / "items.jsonl", items)
        wall, cpu = timed(lambda: run_items(JudgeTask(JudgeOptions(reasoning_tokens=16)),
                                            tmp / "items.jsonl", tmp / "judged.jsonl",
                                            registry=registry, model="bench", console=QUIET,
                                            show_progress=False))
        rates["judge"] = (plain_chat, 2 * items / wall, plain_cpu, cpu)
    if "embed" in workloads:
        batch = emb[0].max_batch_size or DEFAULT_BATCH
        # a request of `batch` texts holds min(batch, C) slots when capacity counts texts
        slots = min(batch, capacity) if unit == "texts" else 1
        requests = max(1, requests // slots)
        texts = requests * batch
        wall, plain_cpu = timed(lambda: asyncio.run(raw_rate(
            emb, requests, in_flight, retrying(partial(embed_request, batch=batch)))))
        plain_embed = texts / wall
        corpus_file(tmp / "corpus.jsonl", texts)
        wall, cpu = timed(lambda: run_embed(tmp / "corpus.jsonl", tmp / "emb",
                                            registry=registry, options=EmbedOptions(model="emb"),
                                            console=QUIET, show_progress=False))
        rates["embed"] = (plain_embed, texts / wall, plain_cpu, cpu)
    return rates


def nominal_rate(unit: str, replicas: int, workload: str, args: argparse.Namespace) -> float:
    """What the stubs serve at full capacity: requests/s, or texts/s for embed."""
    requests = replicas * args.capacity / args.latency
    if workload != "embed":
        return requests
    batch = DEFAULT_BATCH  # the stubs advertise no batch size: requests of DEFAULT_BATCH texts
    if unit == "texts":  # a request of `batch` texts holds min(batch, C) slots
        return requests / min(batch, args.capacity) * batch
    return requests * batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=32, help="C: slots per stub")
    parser.add_argument("--latency", type=float, default=0.5, help="L: seconds per slot")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="length of each measurement at the stubs' capacity")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--units", nargs="+", default=["requests", "texts"])
    parser.add_argument("--workloads", nargs="+", default=["run-batch", "judge", "embed"])
    args = parser.parse_args()
    rows = []
    for unit in args.units:
        for replicas in args.replicas:
            with tempfile.TemporaryDirectory() as tmp, stub_fleet(Path(tmp) / "reg") as fleet:
                knobs = {"latency": args.latency, "capacity": args.capacity,
                         "capacity_unit": unit}
                llm = fleet.start_ready(replicas, "bench", **knobs)
                emb = fleet.start_ready(replicas, "emb", kind="embedding", **knobs)
                before = os.getloadavg()
                rates = measure(llm, emb, str(fleet.registry.path), Path(tmp), args.capacity,
                                args.latency, args.seconds, args.workloads, unit)
                load = os.getloadavg()
                for workload, figures in rates.items():
                    rows.append((unit, replicas, workload, *figures, before, load))
                    print(f"  {unit} x{replicas} {workload}: ratio {figures[1] / figures[0]:.3f}",
                          file=sys.stderr, flush=True)
    print(f"stubs: C={args.capacity} slots of L={args.latency} s; each run ~{args.seconds:.0f} s "
          f"at capacity; rates in requests/s (embed: texts/s); {os.cpu_count()} CPUs")
    print("cpu: CPU seconds of the driver process per wall second (plain / nerschat); "
          "load: os.getloadavg() 1-min before and after the group")
    print(f"{'capacity counts':>15} {'replicas':>8} {'workload':>9} {'plain':>9} "
          f"{'nerschat':>9} {'ratio':>6} {'cpu':>9} {'load':>11}")
    bound = []
    for unit, replicas, workload, plain, ours, plain_cpu, cpu, before, load in rows:
        print(f"{unit:>15} {replicas:>8} {workload:>9} {plain:>9.1f} {ours:>9.1f} "
              f"{ours / plain:>6.3f} {plain_cpu:>4.2f}/{cpu:<4.2f} "
              f"{before[0]:>5.2f}/{load[0]:<5.2f}")
        if max(plain_cpu, cpu) > CPU_BOUND:
            bound.append(f"{unit} x{replicas} {workload}")
    if bound:
        print(f"WARNING: the driver was CPU-bound (> {CPU_BOUND:.0%} of a core) in: "
              f"{', '.join(bound)}; those ratios measure this machine's CPU, not nerschat's "
              "pacing")
    slow = [f"{unit} x{replicas} {workload} ({plain / nominal:.0%})"
            for unit, replicas, workload, plain, *_ in rows
            if plain < 0.8 * (nominal := nominal_rate(unit, replicas, workload, args))]
    if slow:
        print("WARNING: the plain generator reached well under the stubs' nominal capacity in: "
              f"{', '.join(slow)}; the stubs (or the machine) are CPU-bound there, so those "
              "ratios compare the CPU each client spends, not pacing")
    if max(r[-1][0] for r in rows) > (os.cpu_count() or 1):
        print(f"WARNING: load average above {os.cpu_count()} CPUs: other work shared the "
              "machine")


if __name__ == "__main__":
    main()
