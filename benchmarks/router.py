"""Direct `AsyncOpenAI` vs the same client through `nerschat router`, and a replica killed.

Stub servers of known capacity (`--capacity` requests at once, `--latency` s each), at 1 and
at 4 replicas. "Direct" gives every in-flight request its own replica (worker i talks to
replica i mod n: perfect balance, no router); "router" sends the same load from the same
set of client objects to the router's one URL. Short phases alternate (direct, router, direct, router, ...) so machine noise hits both;
the router's own CPU time per request (from /proc) is printed too.
Concurrency equals the replicas' total capacity, so throughput is capacity-bound and any
router overhead shows up as lost throughput and added latency. SDK retries are off
(`max_retries=0`): every failure counts.

Then, at 4 replicas through the router, one replica (its server and its pilot) gets
`kill -9` mid-run; the router's clients must see 0 failed requests.

The added latency is measured apart, on a stub that answers at once: requests one at a time,
alternately straight and through the router; the median paired difference is the router's
hop (p50 under load is printed too, but at 0.5 s per request its noise is larger than 1 ms).

Targets: throughput ratio (router/direct) >= 0.95, added p50 latency <= 1 ms, 0 failures.

    python benchmarks/router.py [--latency 0.5] [--capacity 16] [--seconds 10] [--rounds 3] [--pairs 300]

The defaults (16 sequences of 0.5 s per replica: 128 req/s at 4 replicas) keep the whole
run within what a 2-core machine can drive directly; `--latency 0.1 --capacity 8` (320 req/s)
needs more CPU than that, and then measures CPU contention rather than the router.
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
from dataclasses import dataclass, field

import openai

from nerschat.registry import Registry
from nerschat.router.entry import live_routers
from nerschat.testing.fleet import StubFleet, stub_fleet, wait_until

MODEL = "bench"
PROBE_MODEL = "probe"  # a stub that answers at once, for the router's own latency
KEY_ENV = "NERSCHAT_BENCH_ROUTER_KEY"


@dataclass
class Phase:
    ok: int = 0
    in_window: int = 0  # answers completed before the phase's deadline (the rate's numerator)
    failed: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Answers per second within the phase's window (the tail after it is not counted)."""
        return self.in_window / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


async def drive(clients: list[openai.AsyncOpenAI], concurrency: int, seconds: float,
                on_half: asyncio.Event | None = None) -> Phase:
    """`concurrency` workers sending chat completions for `seconds`; worker i uses client i%n."""
    phase = Phase()
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(i: int) -> None:
        client = clients[i % len(clients)]
        n = 0
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            try:
                await client.chat.completions.create(
                    model=MODEL, max_tokens=8,
                    messages=[{"role": "user", "content": f"worker {i} item {n}"}])
            except openai.OpenAIError as exc:
                phase.failed += 1
                phase.errors.append(f"{type(exc).__name__}: {exc}"[:200])
            else:
                phase.ok += 1
                if time.perf_counter() <= deadline:
                    phase.in_window += 1
                phase.latencies.append(time.perf_counter() - sent)
            n += 1

    async def halfway() -> None:
        if on_half is not None:
            await asyncio.sleep(seconds / 2)
            on_half.set()

    await asyncio.gather(halfway(), *(worker(i) for i in range(concurrency)))
    phase.seconds = seconds
    return phase


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_router(registry: Registry, key: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, KEY_ENV: key}
    argv = [sys.executable, "-m", "nerschat.cli.main", "router", "--registry",
            str(registry.path), "--host", "127.0.0.1", "--api-key-env", KEY_ENV,
            "--wait-timeout", "60"]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    wait_until(lambda: live_routers(registry), 30, "the router's registry entry")
    return process


def client(url: str, key: str | None, concurrency: int) -> openai.AsyncOpenAI:
    import httpx2

    limits = httpx2.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    return openai.AsyncOpenAI(base_url=url, api_key=key or "none", max_retries=0,
                              http_client=openai.DefaultAsyncHttpxClient(limits=limits))


async def hop_latency(router_url: str, key: str, probe: str, probe_key: str | None,
                      pairs: int) -> float:
    """Median of paired (router - direct) latencies, one request at a time, in ms.

    A stub that answers at once, asked alternately straight and through the router (the
    order flips every pair): the median difference is what the router's hop adds, with
    the machine's drift cancelled pair by pair.
    """
    direct, routed = client(probe, probe_key, 1), client(router_url, key, 1)

    async def once(c: openai.AsyncOpenAI) -> float:
        sent = time.perf_counter()
        await c.chat.completions.create(model=PROBE_MODEL, max_tokens=8,
                                        messages=[{"role": "user", "content": "probe"}])
        return time.perf_counter() - sent

    for _ in range(20):  # warm up both connections
        await once(direct)
        await once(routed)
    differences = []
    for i in range(pairs):
        if i % 2:
            d, r = await once(direct), await once(routed)
        else:
            r, d = await once(routed), await once(direct)
        differences.append(r - d)
    await direct.close()
    await routed.close()
    return statistics.median(differences) * 1000


async def compare(fleet: StubFleet, router_url: str, key: str, replicas: int,
                  args: argparse.Namespace, router_pid: int) -> tuple[float, float]:
    endpoints = [e for e in fleet.registry.endpoints(MODEL)][:replicas]
    assert len(endpoints) == replicas, endpoints
    concurrency = args.capacity * replicas
    # The same client objects on both sides (one per replica, worker i uses client i mod n),
    # so the client process does the same work and only the URL differs.
    direct = [client(e.url, e.api_key, args.capacity) for e in endpoints]
    routed = [client(router_url, key, args.capacity) for _ in endpoints]
    await drive(direct, concurrency, 1.0)  # warm up connections
    await drive(routed, concurrency, 1.0)
    results: dict[str, list[Phase]] = {"direct": [], "router": []}
    router_cpu = 0.0
    for _ in range(args.rounds):
        for name, clients in (("direct", direct), ("router", routed)):
            before = cpu_seconds(router_pid)
            results[name].append(await drive(clients, concurrency, args.seconds))
            if name == "router":
                router_cpu += cpu_seconds(router_pid) - before
    for name in results:
        failed = sum(p.failed for p in results[name])
        if failed:
            print(f"  {name}: {failed} failed, e.g. {results[name][0].errors[:1]}")
    rate = {k: sum(p.in_window for p in v) / sum(p.seconds for p in v)
            for k, v in results.items()}
    p50 = {k: statistics.median([x for p in v for x in p.latencies]) * 1000
           for k, v in results.items()}
    ideal = replicas * args.capacity / args.latency
    ratio = rate["router"] / rate["direct"]
    (probe,) = fleet.registry.endpoints(PROBE_MODEL)
    added = await hop_latency(router_url, key, probe.url, probe.api_key, args.pairs)
    print(f"{replicas} replica(s), {concurrency} in flight (capacity {ideal:.0f} req/s): "
          f"direct {rate['direct']:.0f} req/s p50 {p50['direct']:.1f} ms | "
          f"router {rate['router']:.0f} req/s p50 {p50['router']:.1f} ms | "
          f"ratio {ratio:.3f} (target >= 0.95); router CPU "
          f"{router_cpu / sum(p.ok for p in results['router']) * 1000:.2f} ms/request\n"
          f"  added latency, median of {args.pairs} paired requests one at a time: "
          f"{added:+.2f} ms (target <= 1)")
    if rate["direct"] < 0.9 * ideal:
        print(f"  note: direct reached only {rate['direct'] / ideal:.0%} of the stubs' capacity: "
              f"this machine is short of CPU, so the comparison measures CPU contention "
              f"(the router's CPU per request above is what it costs)")
    for c in direct + routed:
        await c.close()
    return ratio, added


async def kill_drill(fleet: StubFleet, router_url: str, key: str,
                     args: argparse.Namespace) -> int:
    concurrency = args.capacity * 4
    routed = [client(router_url, key, concurrency)]
    half = asyncio.Event()
    victim = fleet.pilots[-1]
    server_pid = victim.server_pid

    async def kill() -> None:
        await half.wait()
        if server_pid is not None:
            os.kill(server_pid, signal.SIGKILL)
        os.kill(victim.process.pid, signal.SIGKILL)  # its entry stays "ready" until the ttl

    killer = asyncio.create_task(kill())
    phase = await drive(routed, concurrency, 2 * args.seconds + 4, on_half=half)
    await killer
    print(f"kill -9 of 1 of 4 replicas mid-run: {phase.ok} ok, {phase.failed} failed "
          f"(target 0), {phase.rate:.0f} req/s, p50 {phase.p50_ms:.2f} ms")
    if phase.failed:
        print("  e.g.", phase.errors[:2])
    await routed[0].close()
    return phase.failed


async def main_async(args: argparse.Namespace) -> int:
    key = "bench-" + os.urandom(8).hex()
    with tempfile.TemporaryDirectory() as tmp, stub_fleet(tmp) as fleet:
        fleet.start_ready(1, MODEL, capacity=args.capacity, latency=args.latency)
        fleet.start_ready(1, PROBE_MODEL)
        router = start_router(fleet.registry, key)
        try:
            url = live_routers(fleet.registry)[0].url
            print("load average at the start: "
                  + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores")
            print(f"stubs: {args.capacity} requests at once x {args.latency * 1000:.0f} ms each; "
                  f"{args.rounds} rounds of {args.seconds:.0f} s per side")
            ratio1, added1 = await compare(fleet, url, key, 1, args, router.pid)
            fleet.start_ready(3, MODEL, capacity=args.capacity, latency=args.latency)
            await asyncio.sleep(2.5)  # the router's pool re-reads the registry every 2 s
            ratio4, added4 = await compare(fleet, url, key, 4, args, router.pid)
            failed = await kill_drill(fleet, url, key, args)
        finally:
            router.send_signal(signal.SIGTERM)
            router.wait(10)
    print("load average (1, 5, 15 min) at the end: "
          + ", ".join(f"{x:.1f}" for x in os.getloadavg()) + f" on {os.cpu_count()} cores")
    good = min(ratio1, ratio4) >= 0.95 and max(added1, added4) <= 1.0 and failed == 0
    print("PASS" if good else "FAIL")
    return 0 if good else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.5, help="stub seconds per request")
    parser.add_argument("--capacity", type=int, default=16, help="stub requests at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--rounds", type=int, default=3, help="direct/router pairs per size")
    parser.add_argument("--pairs", type=int, default=300,
                        help="paired requests for the added latency")
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
