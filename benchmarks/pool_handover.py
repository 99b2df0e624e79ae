"""A pool of stub replicas on the local real SLURM, under steady load, across several walltimes.

Prints a per-second timeline of ready replicas, each hand-over's overlap, losses replaced,
lost / duplicated requests and the pool's accounting. Not a test: run it by hand, e.g.

    bash scripts/local-slurm.sh start --gpus 4 && eval "$(bash scripts/local-slurm.sh env)"
    .venv/bin/python benchmarks/pool_handover.py --duration 900 --walltime 00:03:00

Faults, each S seconds after the replicas were first ready, each on a different ready member,
each reported with the seconds until `--replicas` were ready again (and how):

- `--scancel-at S`: `scancel` of its job (the pool replaces it);
- `--kill9-at S`: `kill -9` of its pilot process (the job ends, the pool replaces it);
- `--freeze-at S`: SIGSTOP of its engine (the pilot finds it unhealthy, kills it after
  the members' unhealthy timeout and restarts it in place; the pool replaces it if that takes
  longer than its restart grace). The members use the pool's default probe settings unless
  `--health-timeout`, `--health-failures` or `--unhealthy-timeout` are given.

    .venv/bin/python benchmarks/pool_handover.py --duration 900 --scancel-at 200 \
        --kill9-at 420 --freeze-at 640
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from nerschat.pool import Member, Pool, Timing
from nerschat.registry import Registry
from nerschat.testing.pool_load import ReadySampler, SteadyLoad


@dataclass
class Fault:
    """One fault done to one member, and when the pool had its replicas ready again."""

    kind: str
    at: float
    victim: Member
    restarts_before: int
    recovered_in: float | None = None
    how: str = ""


def children(pid: int) -> list[int]:
    """The direct child processes of `pid` (the pilot's engine server)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def inflict(kind: str, pool: Pool, registry: Registry, used: set[str]) -> Fault:
    """Do `kind` to the ready member not hit before with the most walltime left.

    (A member about to be handed over would be replaced by its hand-over anyway.)
    """
    victim = max((m for m in pool.state.members
                  if m.phase == "ready" and m.drain_at is None and m.id not in used),
                 key=lambda m: m.expires_at or float("inf"))
    used.add(victim.id)
    entry = registry.get(victim.id)
    assert entry is not None
    if kind == "scancel":
        subprocess.run(["scancel", "--", victim.job_id], check=False, timeout=30)
    elif kind == "kill9":
        os.kill(entry.pid, signal.SIGKILL)
    else:
        for child in children(entry.pid):
            os.kill(child, signal.SIGSTOP)
    return Fault(kind, time.time(), victim, victim.restarts)


def check_recovered(fault: Fault, registry: Registry, model: str, replicas: int) -> None:
    """Set `recovered_in` once `replicas` are ready again and the victim is gone or back."""
    ready = registry.endpoints(model)
    victim = fault.victim
    back = victim.phase == "ready" and victim.restarts > fault.restarts_before
    if len(ready) >= replicas and (victim.phase == "gone" or back):
        fault.recovered_in = time.time() - fault.at
        fault.how = ("restarted in place" if back else
                     f"replaced ({victim.reason or 'gone'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=900.0, help="seconds of load")
    parser.add_argument("--walltime", default="00:03:00")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--drain-before", type=float, default=10.0)
    parser.add_argument("--lead-floor", type=float, default=20.0)
    parser.add_argument("--overlap", type=float, default=5.0)
    parser.add_argument("--scancel-at", type=float, default=None)
    parser.add_argument("--kill9-at", type=float, default=None)
    parser.add_argument("--freeze-at", type=float, default=None)
    parser.add_argument("--unhealthy-timeout", type=float, default=None,
                        help="seconds a frozen engine stays unhealthy before its pilot kills "
                             "and restarts it [default: the pool's]")
    parser.add_argument("--health-timeout", type=float, default=None,
                        help="seconds one health probe of a member's engine may take "
                             "[default: the pool's]")
    parser.add_argument("--health-failures", type=int, default=None,
                        help="failed probes in a row that make a member unhealthy "
                             "[default: the pool's]")
    parser.add_argument("--registry", default=None,
                        help="[default: a fresh directory under ~/.cache/nerschat]")
    args = parser.parse_args()
    path = Path(args.registry) if args.registry else (
        Path.home() / ".cache" / "nerschat" / "bench-pool" / uuid.uuid4().hex[:8])
    registry = Registry(path)
    model = "bench-pool"
    probes = {name: value for name, value in (("unhealthy_timeout", args.unhealthy_timeout),
                                              ("health_timeout", args.health_timeout),
                                              ("health_failures", args.health_failures))
              if value is not None}  # unset: the pool's defaults
    pool = Pool("stub", model, args.replicas, registry=registry, site="slurm",
                walltime=args.walltime, drain_before=args.drain_before,
                **probes,
                timing=Timing(lead_floor=args.lead_floor, overlap=args.overlap))
    sampler = ReadySampler(registry, model)
    load = SteadyLoad(registry, model, rate=args.rate)
    plan = sorted((at, kind) for kind, at in (("scancel", args.scancel_at),
                                              ("kill9", args.kill9_at),
                                              ("freeze", args.freeze_at)) if at is not None)
    faults: list[Fault] = []
    used: set[str] = set()
    started = time.time()
    try:
        pool.start()
        pool.wait_ready(timeout=300)
        first_ready = time.time()
        print(f"pool {pool.id}: {args.replicas} ready {first_ready - started:.1f} s after start")
        sampler.start()
        load.start()
        deadline = first_ready + args.duration
        while time.time() < deadline:
            if plan and time.time() - first_ready >= plan[0][0]:
                faults.append(inflict(plan.pop(0)[1], pool, registry, used))
            for fault in faults:
                if fault.recovered_in is None:
                    check_recovered(fault, registry, model, args.replicas)
            time.sleep(0.5)
    finally:
        load.stop()
        sampler.stop()
        pool.stop(timeout=180)
        left = [m.job_id for m in pool.state.members if m.slurm]
        subprocess.run(["scancel", "--", *left], capture_output=True, timeout=30, check=False)
    state = pool.state
    use = pool.usage()
    print(f"timeline (ready replicas, one digit per second, {len(sampler.samples)} s):")
    print(sampler.timeline())
    print(f"lowest ready since {args.replicas} first ready: "
          f"{sampler.lowest_since(args.replicas)}")
    if faults:
        def in_fault(t: float) -> bool:
            return any(f.at - 1 <= t <= f.at + (f.recovered_in or 1e9) + 1 for f in faults)

        outside = [n for t, n in sampler.samples if not in_fault(t)]
        print(f"lowest ready outside the faults' recoveries: {min(outside, default=None)}")
    for fault in faults:
        recovered = ("not recovered" if fault.recovered_in is None else
                     f"{args.replicas} ready again in {fault.recovered_in:.1f} s, {fault.how}")
        print(f"{fault.kind} of {fault.victim.id} (job {fault.victim.job_id}) at "
              f"{fault.at - first_ready:.0f} s: {recovered}")
    for h in state.handovers:
        print(f"hand-over {h.old} -> {h.new}: overlap {h.overlap_s:.1f} s, "
              f"{h.old_time_left_s or 0:.0f} s of walltime left")
    restarts = sum(m.restarts for m in state.members)
    print(f"hand-overs {len(state.handovers)}, losses replaced {state.replaced_losses}, "
          f"engine restarts in place {restarts}")
    print(f"requests sent {load.sent}, lost {load.lost}, duplicated {load.duplicated}, "
          f"errors {len(load.errors)}")
    print(f"learned lead time {pool.lead_time():.1f} s from {len(state.lead_samples)} samples "
          f"(max {max(state.lead_samples, default=0):.1f} s)")
    print(f"members {len(state.members)}, replica-hours {use.replica_hours:.3f}, "
          f"GPU-hours {use.gpu_hours:.3f}")
    if not args.registry:
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
