"""Chat requests through `aconnect()` over 3 stub replicas while one replica misbehaves.

One run per fault, each on a fresh fleet: none (baseline), kill -9 of a server, SIGSTOP
(frozen), every request answered 500, 10x slower, drained with `nerschat stop`. The fault
starts once 30% of the requests are done. Per fault it prints: requests lost (raised to the
caller; must be 0), duplicated or wrong answers seen by the caller (0), seconds of
throughput below 50% of the healthy rate (measured in 0.5 s bins from the fault to the
last full bin), and p50/p99 latency.

    python benchmarks/faults.py [--requests 20000] [--concurrency 64] [--faults kill,freeze]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import openai

import nerschat
from nerschat.testing.fleet import PilotProcess, StubFleet, set_faults, stub_fleet

FAULTS = ("none", "kill", "freeze", "http500", "slow", "drain")
BIN = 0.5


@dataclass
class Outcome:
    fault: str
    requests: int
    lost: int
    wrong: int
    seconds_below_half: float
    p50: float
    p99: float
    rate: float


def inject(fault: str, fleet: StubFleet, victim: PilotProcess, registry: str) -> None:
    endpoint = victim.endpoint
    assert endpoint is not None
    if fault == "kill":
        os.kill(victim.server_pid or victim.process.pid, signal.SIGKILL)
    elif fault == "freeze":
        os.kill(victim.server_pid or victim.process.pid, signal.SIGSTOP)
    elif fault == "http500":
        set_faults(endpoint, error_every=1, error_status=500)
    elif fault == "slow":
        set_faults(endpoint, slow_factor=10.0)
    elif fault == "drain":
        subprocess.Popen([sys.executable, "-m", "nerschat.cli.main", "stop", endpoint.id,
                          "--no-wait", "--registry", registry],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def seconds_below_half(done_at: list[float], start: float, fault_at: float | None,
                       concurrency: int) -> tuple[float, float]:
    """(seconds below 50% of the healthy rate after the fault, healthy rate req/s)."""
    ends = sorted(done_at)
    last_full = ends[max(0, len(ends) - concurrency - 1)]  # the tail drains, not a fault
    bins: dict[int, int] = {}
    for t in ends:
        bins[int((t - start) / BIN)] = bins.get(int((t - start) / BIN), 0) + 1
    first = int(((fault_at or start) - start) / BIN)
    last = int((last_full - start) / BIN)
    before = [bins.get(b, 0) for b in range(2, max(3, first))]  # skip the warm-up bins
    healthy = statistics.median(before) if before else 0.0
    below = sum(1 for b in range(first, last) if bins.get(b, 0) < 0.5 * healthy)
    return below * BIN, healthy / BIN


async def run_one(fault: str, requests: int, concurrency: int, latency: float) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp, stub_fleet(tmp) as fleet:
        pilots = [fleet.start("m1", latency=latency, ttl=5.0) for _ in range(3)]
        for pilot in pilots:
            fleet.wait_ready(pilot)
        client = nerschat.aconnect("m1", registry=tmp, wait_timeout=120, refresh_interval=0.5,
                                   max_retries=0)
        answers: dict[int, str] = {}
        errors: list[str] = []
        latencies: list[float] = []
        done_at: list[float] = []
        queue = iter(range(requests))
        fault_at: float | None = None
        start = time.monotonic()

        async def worker() -> None:
            nonlocal fault_at
            for i in queue:
                sent = time.monotonic()
                try:
                    reply = await client.chat.completions.create(
                        model="m1", max_tokens=8,
                        messages=[{"role": "user", "content": f"item {i}"}])
                except openai.APIError as exc:
                    errors.append(f"{i}: {exc}"[:200])
                    continue
                now = time.monotonic()
                latencies.append(now - sent)
                done_at.append(now)
                if i in answers:
                    errors.append(f"{i}: answered twice")
                answers[i] = str(reply.choices[0].message.content)
                if fault_at is None and len(done_at) >= 0.3 * requests:
                    fault_at = now
                    if fault != "none":
                        await asyncio.to_thread(inject, fault, fleet, pilots[0], tmp)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            if fault == "freeze":
                victim = pilots[0].server_pid
                if victim:
                    os.kill(victim, signal.SIGCONT)
            await client.close()
        elapsed = time.monotonic() - start
        wrong = sum(1 for i, text in answers.items() if f"item {i}" not in text)
        lost = requests - len(answers)
        below, _healthy = seconds_below_half(done_at, start, fault_at, concurrency)
        latencies.sort()
        if errors:
            print(f"  {fault}: first error: {errors[0]}", file=sys.stderr)
        return Outcome(fault, requests, lost, wrong, below,
                       latencies[len(latencies) // 2] if latencies else 0.0,
                       latencies[int(len(latencies) * 0.99)] if latencies else 0.0,
                       len(done_at) / elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="stub seconds per request")
    parser.add_argument("--faults", default=",".join(FAULTS),
                        help=f"comma-separated, among {', '.join(FAULTS)}")
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    print(f"{args.requests} chat requests, {args.concurrency} in flight, 3 stub replicas "
          f"({args.latency * 1e3:.0f} ms each); fault on replica 1 after 30% of the requests")
    print(f"{'fault':<8} {'lost':>5} {'dup/wrong':>9} {'s < 50%':>8} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'req/s':>7}")
    for fault in faults:
        o = asyncio.run(run_one(fault, args.requests, args.concurrency, args.latency))
        print(f"{o.fault:<8} {o.lost:>5} {o.wrong:>9} {o.seconds_below_half:>8.2f} "
              f"{o.p50 * 1e3:>8.1f} {o.p99 * 1e3:>8.1f} {o.rate:>7.0f}", flush=True)


if __name__ == "__main__":
    main()
