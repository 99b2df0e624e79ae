"""Peak memory of run-batch, judge and embed as the input grows, printed side by side.

Each command runs as its own process (the CLI, default settings) against a fast stub; its
peak RSS is read with getrusage. Goal: peak at the large size <= 1.2x the small size, and
< 500 MB at 1,000,000 lines.

    python benchmarks/memory.py [--small 100000] [--large 1000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nerschat.testing.fleet import stub_fleet

CLI = [sys.executable, "-m", "nerschat.cli.main"]
PEAK = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def write_inputs(tmp: Path, lines: int) -> dict[str, Path]:
    paths = {name: tmp / f"{name}-{lines}.jsonl" for name in ("run-batch", "judge", "embed")}
    with open(paths["run-batch"], "w") as batch, open(paths["judge"], "w") as judge, \
            open(paths["embed"], "w") as corpus:
        for i in range(lines):
            batch.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                    "url": "/v1/chat/completions",
                                    "body": {"model": "m", "max_tokens": 4,
                                             "messages": [{"role": "user",
                                                           "content": f"item {i}"}]}}) + "\n")
            judge.write(json.dumps({"id": f"q{i}", "question": f"Is {i} even?",
                                    "answers": ["yes", "no"]}) + "\n")
            corpus.write(json.dumps({"id": f"d{i}", "text": f"passage {i}"}) + "\n")
    return paths


def command(workload: str, source: Path, out: Path, registry: Path) -> list[str]:
    common = ["--registry", str(registry), "--no-progress"]
    if workload == "run-batch":
        return [*CLI, "run-batch", "-i", str(source), "-o", str(out), *common]
    if workload == "judge":
        return [*CLI, "judge", str(source), "-o", str(out), "--model", "m",
                "--reasoning-tokens", "4", *common]
    return [*CLI, "embed", str(source), "-o", str(out), "--model", "e", *common]


def peak_mb(argv: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one command."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK, *argv], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--workloads", nargs="+", default=["run-batch", "judge", "embed"])
    args = parser.parse_args()
    results: dict[tuple[str, int], tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp, stub_fleet(Path(tmp) / "reg") as fleet:
        fleet.start_ready(2, "m", capacity=4096)
        fleet.start_ready(2, "e", kind="embedding", capacity=4096, dim=64)
        for lines in (args.small, args.large):
            paths = write_inputs(Path(tmp), lines)
            for workload in args.workloads:
                out = Path(tmp) / f"out-{workload}-{lines}"
                results[workload, lines] = peak_mb(command(workload, paths[workload], out,
                                                           fleet.registry.path))
                print(f"{workload} {lines}: {results[workload, lines][0]:.0f} MB "
                      f"({results[workload, lines][1]:.0f} s)", file=sys.stderr, flush=True)
    print(f"{'workload':>10} {args.small:>12,} {args.large:>12,} {'ratio':>7}   (peak RSS, MB)")
    for workload in args.workloads:
        small, large = results[workload, args.small][0], results[workload, args.large][0]
        print(f"{workload:>10} {small:>12.0f} {large:>12.0f} {large / small:>7.2f}")


if __name__ == "__main__":
    main()
