"""How far running workflows got, per model: what elastic pools and `nerschat ls --pool` read.

Each running workflow (judge, run-batch, embed) keeps one small file
`<registry>/pools/workflows/<run>.json` up to date while it works:
`{model, done, total, rate, at, host, pid}` (items of this run; `rate` in items per second of
this run so far; `at` epoch seconds). It removes the file when it ends; a file not rewritten
for `FRESH_FOR` seconds belongs to a workflow that died and is ignored.

A pool serving `model` sums the fresh reports of that model: the remaining items are part of
its backlog (`nerschat.pool.controller`), and done/total feed its accounting.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from nerschat.pool.state import POOL_DIR, pool_dir
from nerschat.registry import Registry

WORKFLOW_DIR = "workflows"
FRESH_FOR = 120.0  # seconds: a report older than this is a dead workflow's
WRITE_EVERY = 2.0  # seconds between writes while the count moves
BEAT_EVERY = 30.0  # seconds between writes while it does not
MIN_RATE_S = 5.0  # seconds of a run before its rate is reported


@dataclass(frozen=True)
class Remaining:
    """The fresh reports of one model, summed: items done and in all, items per second."""

    workflows: int
    done: int
    total: int
    rate: float

    @property
    def remaining(self) -> int:
        """Items not done yet."""
        return max(0, self.total - self.done)

    def eta_s(self) -> float | None:
        """Seconds the rest takes at the current rate; None when nothing was done yet."""
        return self.remaining / self.rate if self.rate > 0 else None


def workflow_dir(registry: Registry) -> Path:
    """`<registry>/pools/workflows`."""
    return registry.path / POOL_DIR / WORKFLOW_DIR


class WorkflowReporter:
    """Keeps one workflow's report file current: call `update(done)`, then `close()`.

    Never raises for file-system trouble (the report is advisory); writes at most every
    `WRITE_EVERY` seconds, and at least every `BEAT_EVERY` seconds so it stays fresh.
    """

    def __init__(self, registry: Registry, model: str, total: int) -> None:
        self.registry = registry
        self.model = model
        self.total = total
        self.path = workflow_dir(registry) / f"{uuid.uuid4().hex[:12]}.json"
        self._started = time.monotonic()
        self._written_at = -1e18
        self._written: int | None = None

    def update(self, done: int, *, force: bool = False) -> None:
        """Record `done` items of `total` (written when due or forced)."""
        now = time.monotonic()
        due = now - self._written_at >= (WRITE_EVERY if done != self._written else BEAT_EVERY)
        if not (force or due):
            return
        elapsed = now - self._started
        rate = done / elapsed if elapsed >= MIN_RATE_S else 0.0  # too early to tell
        payload = {"model": self.model, "done": done, "total": self.total,
                   "rate": round(rate, 6), "at": time.time(),
                   "host": socket.gethostname(), "pid": os.getpid()}
        with contextlib.suppress(OSError):
            pool_dir(self.registry).joinpath(WORKFLOW_DIR).mkdir(
                mode=self.registry.dir_mode, exist_ok=True)
            self.registry.write_file(self.path, json.dumps(payload).encode())
            self._written_at, self._written = now, done

    def close(self) -> None:
        """The workflow ended: remove its report."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def remaining(registry: Registry, model: str, now: float | None = None) -> Remaining | None:
    """The fresh workflow reports for `model`, summed; None when there is none.

    Unreadable or malformed files are skipped (they are advisory, written by anyone).
    """
    now = time.time() if now is None else now
    done = total = count = 0
    rate = 0.0
    with contextlib.suppress(OSError):
        for path in workflow_dir(registry).glob("*.json"):
            try:
                data = json.loads(path.read_bytes())
                if data["model"] != model or now - float(data["at"]) > FRESH_FOR:
                    continue
                item_done, item_total = int(data["done"]), int(data["total"])
                item_rate = float(data.get("rate") or 0.0)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            count += 1
            done += max(0, item_done)
            total += max(0, item_total)
            rate += max(0.0, item_rate)
    return Remaining(count, done, total, rate) if count else None
