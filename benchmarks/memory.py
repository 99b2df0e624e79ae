"""Peak memory of run-batch, judge and embed as the input grows, printed side by side.

Each command runs as its own process (the CLI, default settings) against fast stubs (no
latency, many slots). Its peak RSS is the largest sum over the whole process tree (the CLI
and any workers it starts), sampled from /proc every 50 ms, or the largest single process
as the kernel reports it when the command ends (`wait4`), whichever is higher. After the
large run, the same command runs again with everything already done (a resume-only rerun).
Goal: peak at the large size <= 1.2x the small size, and < 500 MB at 1,000,000 lines.

    python benchmarks/memory.py [--small 100000] [--large 1000000] [--workloads judge ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from nerschat.testing.fleet import stub_fleet

CLI = [sys.executable, "-m", "nerschat.cli.main"]
PAGE = os.sysconf("SC_PAGE_SIZE")
WORKLOADS = ("run-batch", "judge", "embed")


def write_input(path: Path, workload: str, lines: int) -> Path:
    """`lines` small input lines for `workload` (kept if already written)."""
    if path.exists():
        return path
    with open(path, "w") as out:
        for i in range(lines):
            if workload == "run-batch":
                record = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                          "body": {"model": "m", "max_tokens": 4,
                                   "messages": [{"role": "user", "content": f"item {i}"}]}}
            elif workload == "judge":
                record = {"id": f"q{i}", "question": f"Is {i} even?", "answers": ["yes", "no"]}
            else:
                record = {"id": f"d{i}", "text": f"passage {i}"}
            out.write(json.dumps(record) + "\n")
    return path


def command(workload: str, source: Path, out: Path, registry: Path,
            reasoning_tokens: int) -> list[str]:
    common = ["--registry", str(registry), "--no-progress"]
    if workload == "run-batch":
        return [*CLI, "run-batch", "-i", str(source), "-o", str(out), *common]
    if workload == "judge":
        return [*CLI, "judge", str(source), "-o", str(out), "--model", "m",
                "--reasoning-tokens", str(reasoning_tokens), *common]
    return [*CLI, "embed", str(source), "-o", str(out), "--model", "e", *common]


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return found


def tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (0 once it is gone)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/statm") as handle:
                total += int(handle.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
        todo += _children(current)
    return total


def peak_mb(argv: list[str]) -> tuple[float, float]:
    """(peak RSS of the process tree in MB, seconds) of one command; raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    assert proc.stderr is not None
    try:
        errors = proc.stderr.read()  # until the command closes it (it ends)
    except BaseException:  # interrupted (SIGTERM, Ctrl-C): stop the command too
        proc.kill()
        proc.wait()
        raise
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:4])} failed ({proc.returncode}): "
                           f"{errors.decode(errors='replace')[-500:]}")
    peak = max(peak, usage.ru_maxrss * 1024)
    return peak / 2**20, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--reasoning-tokens", type=int, default=4,
                        help="judge: reasoning budget (0: one request per item)")
    parser.add_argument("--replicas", type=int, default=1, help="stub replicas per model")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep inputs and outputs here (default: a temporary directory)")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the stub fleet's servers are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[tuple[str, str], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.workdir or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        with stub_fleet(tmp / "reg") as fleet:
            fleet.start_ready(args.replicas, "m", capacity=100_000)
            fleet.start_ready(args.replicas, "e", kind="embedding", capacity=100_000, dim=64)
            runs = [("small", args.small, False), ("large", args.large, False),
                    ("resume", args.large, True)]
            for workload in args.workloads:
                for label, lines, again in runs:
                    source = write_input(tmp / f"{workload}-{lines}.jsonl", workload, lines)
                    out = tmp / f"out-{workload}-{lines}"
                    if not again:
                        subprocess.run(["rm", "-rf", str(out), f"{out}.parts",
                                        f"{out}.errors.jsonl"], check=True)
                    argv = command(workload, source, out, fleet.registry.path,
                                   args.reasoning_tokens)
                    results[workload, label] = peak_mb(argv)
                    mb, seconds = results[workload, label]
                    print(f"{workload} {label} ({lines:,} lines): {mb:.0f} MB, {seconds:.0f} s",
                          file=sys.stderr, flush=True)
    print(f"\npeak RSS of the process tree (MB); fast stubs, {args.replicas} replica(s) each")
    print(f"{'workload':>10} {args.small:>10,} {args.large:>10,} {'ratio':>6} "
          f"{'resume':>8}   seconds (small / large / resume)")
    for workload in args.workloads:
        small, large, resume = (results[workload, k] for k in ("small", "large", "resume"))
        print(f"{workload:>10} {small[0]:>10.0f} {large[0]:>10.0f} {large[0] / small[0]:>6.2f} "
              f"{resume[0]:>8.0f}   {small[1]:.0f} / {large[1]:.0f} / {resume[1]:.0f}")


if __name__ == "__main__":
    main()
