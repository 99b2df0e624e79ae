"""A pool of stub replicas on the local real SLURM, under steady load, across several walltimes.

Prints a per-second timeline of ready replicas, each hand-over's overlap, losses replaced,
lost / duplicated requests and the pool's accounting. Not a test: run it by hand, e.g.

    bash scripts/local-slurm.sh start --gpus 2 && eval "$(bash scripts/local-slurm.sh env)"
    .venv/bin/python benchmarks/pool_handover.py --duration 900 --walltime 00:03:00

`--scancel-at S` cancels one member S seconds in and reports how long its replacement took.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from nerschat.pool import Pool, Timing
from nerschat.registry import Registry
from nerschat.testing.pool_load import ReadySampler, SteadyLoad


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
    parser.add_argument("--registry", default=None,
                        help="[default: a fresh directory under ~/.cache/nerschat]")
    args = parser.parse_args()
    path = Path(args.registry) if args.registry else (
        Path.home() / ".cache" / "nerschat" / "bench-pool" / uuid.uuid4().hex[:8])
    registry = Registry(path)
    model = "bench-pool"
    pool = Pool("stub", model, args.replicas, registry=registry, site="slurm",
                walltime=args.walltime, drain_before=args.drain_before,
                timing=Timing(lead_floor=args.lead_floor, overlap=args.overlap))
    sampler = ReadySampler(registry, model)
    load = SteadyLoad(registry, model, rate=args.rate)
    replaced_in: float | None = None
    lost_at = 0.0
    started = time.time()
    try:
        pool.start()
        pool.wait_ready(timeout=300)
        first_ready = time.time()
        print(f"pool {pool.id}: {args.replicas} ready {first_ready - started:.1f} s after start")
        sampler.start()
        load.start()
        deadline = first_ready + args.duration
        cancelled = False
        while time.time() < deadline:
            if (args.scancel_at is not None and not cancelled
                    and time.time() - first_ready >= args.scancel_at):
                victim = next(m for m in pool.state.members if m.phase == "ready")
                subprocess.run(["scancel", victim.job_id], check=False, timeout=30)
                cancelled, lost_at = True, time.time()
                while time.time() - lost_at < 120:
                    others = [e for e in registry.endpoints(model) if e.id != victim.id]
                    if victim.phase == "gone" and len(others) >= args.replicas:
                        replaced_in = time.time() - lost_at
                        break
                    time.sleep(0.5)
            time.sleep(1)
    finally:
        load.stop()
        sampler.stop()
        pool.stop(timeout=180)
        left = [m.job_id for m in pool.state.members if m.slurm]
        subprocess.run(["scancel", *left], capture_output=True, timeout=30, check=False)
    state = pool.state
    use = pool.usage()
    print(f"timeline (ready replicas, one digit per second, {len(sampler.samples)} s):")
    print(sampler.timeline())
    print(f"lowest ready since {args.replicas} first ready: "
          f"{sampler.lowest_since(args.replicas)}")
    if replaced_in is not None:
        outside = [n for t, n in sampler.samples if not lost_at - 1 <= t <= lost_at + replaced_in + 1]
        print(f"lowest ready outside the scancel'd member's replacement: {min(outside)}")
    for h in state.handovers:
        print(f"hand-over {h.old} -> {h.new}: overlap {h.overlap_s:.1f} s, "
              f"{h.old_time_left_s or 0:.0f} s of walltime left")
    print(f"hand-overs {len(state.handovers)}, losses replaced {state.replaced_losses}"
          + (f", scancel'd member replaced in {replaced_in:.1f} s" if replaced_in else ""))
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
