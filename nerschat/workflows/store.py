"""Resumable results: each shard appends to its own file; a merge writes the final output.

Results are appended one JSON line per finished item, flushed at once, so a killed run
loses at most the requests that were in flight. A rerun reads every result file, skips ids
that already succeeded, and writes new shard files next to the old ones. The merge
writes the output in input order with each id exactly once (a success over an error,
else the latest line), atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

RESULT_PREFIX = "results-"


def read_result_lines(path: Path) -> list[dict[str, Any]]:
    """Decoded lines of a result file; a torn last line (killed writer) is ignored."""
    results = []
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.endswith(b"\n"):
                break
            try:
                value = json.loads(raw)
            except ValueError:
                continue
            if isinstance(value, dict):
                results.append(value)
    return results


class ResultStore:
    """A work directory (`OUT.parts/`) holding shard inputs and appended shard results."""

    def __init__(self, workdir: str | os.PathLike[str], key: str = "id"):
        self.workdir = Path(workdir)
        self.key = key

    def ensure(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)

    def result_files(self) -> list[Path]:
        if not self.workdir.is_dir():
            return []
        return sorted(self.workdir.glob(f"{RESULT_PREFIX}*.jsonl"))

    def latest(self) -> dict[str, dict[str, Any]]:
        """Best result per id over all files: the latest success, else the latest error."""
        best: dict[str, dict[str, Any]] = {}
        for path in self.result_files():
            for result in read_result_lines(path):
                key = result.get(self.key)
                if key is None:
                    continue
                previous = best.get(key)
                if previous is None or result.get("error") is None or previous.get("error") is not None:
                    best[key] = result
        return best

    def done_ids(self) -> set[str]:
        return {k for k, r in self.latest().items() if r.get("error") is None}

    def next_run(self) -> int:
        runs = [int(p.name[len(RESULT_PREFIX):].split("-")[0]) for p in self.result_files()
                if p.name[len(RESULT_PREFIX):].split("-")[0].isdigit()]
        return max(runs, default=-1) + 1

    def shard_paths(self, run: int, shard: int) -> tuple[Path, Path]:
        """(input file, result file) of one shard of one run."""
        stem = f"{run:03d}-{shard:04d}"
        return self.workdir / f"input-{stem}.jsonl", self.workdir / f"{RESULT_PREFIX}{stem}.jsonl"

    def merge(self, order: Iterable[str], output: str | os.PathLike[str]) -> dict[str, int]:
        """Write one line per id in `order` (those that have a result), atomically."""
        output = Path(output)
        latest = self.latest()
        counts = {"written": 0, "errors": 0, "missing": 0}
        output.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for key in order:
                result = latest.get(key)
                if result is None:
                    counts["missing"] += 1
                    continue
                counts["written"] += 1
                counts["errors"] += result.get("error") is not None
                handle.write(json.dumps(result, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, output)
        return counts


class ResultWriter:
    """Append-only writer for one shard's results (one line per item, flushed each time)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, result: dict[str, Any]) -> None:
        self._handle.write(json.dumps(result, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
