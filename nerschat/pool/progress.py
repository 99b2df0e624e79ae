"""How far running workflows got, per model: what elastic pools and `nerschat ls --pool` read.

Each running workflow (judge, run-batch, embed) keeps one small file
`<registry>/pools/workflows/<run>.json` up to date while it works:
`{model, done, total, rate, at, host, pid}` (items of this run; `rate` in items per second of
this run so far; `at` epoch seconds). It removes the file when it ends; a file not rewritten
for `FRESH_FOR` seconds belongs to a workflow that died and is ignored.

A pool serving `model` sums the fresh reports of that model: the remaining items are part of
its backlog (`nerschat.pool.controller`), and done/total feed its accounting.

Reports are read under the same rules as pool states (`nerschat.pool.state`): no links, no
FIFOs or devices, at most `MAX_REPORT_BYTES`, trusted owners only, typed fields; a file that
breaks one is a problem (`scan_reports`), not counted.
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

from nerschat.pool.state import POOL_DIR, pool_dir, pools_trust, read_json, subdirectory_trust
from nerschat.registry import (
    DirectoryTrust,
    Registry,
    RegistryError,
    RegistryProblem,
    _number,
    _text,
)

WORKFLOW_DIR = "workflows"
FRESH_FOR = 120.0  # seconds: a report older than this is a dead workflow's
WRITE_EVERY = 2.0  # seconds between writes while the count moves
BEAT_EVERY = 30.0  # seconds between writes while it does not
MIN_RATE_S = 5.0  # seconds of a run before its rate is reported
MAX_REPORT_BYTES = 4096  # a report is about 150 bytes


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
        with contextlib.suppress(OSError, RegistryError):
            with contextlib.suppress(FileExistsError):
                os.mkdir(pool_dir(self.registry) / WORKFLOW_DIR, self.registry.dir_mode)
            if workflows_trust(self.registry) is None:  # a link or an unsafe directory raises
                return
            self.registry.write_file(self.path, json.dumps(payload).encode())
            self._written_at, self._written = now, done

    def close(self) -> None:
        """The workflow ended: remove its report."""
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Report:
    """One workflow's report, validated: its model, items done and in all, items per second."""

    model: str
    done: int
    total: int
    rate: float
    at: float


def _report(data: object) -> Report:
    """A decoded report file, type-checked; ValueError naming the field."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    counts = []
    for name in ("done", "total"):
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"field {name!r}: not a non-negative integer")
        counts.append(value)
    rate = _number("rate", data.get("rate", 0.0))
    if rate < 0:
        raise ValueError("field 'rate': negative")
    return Report(_text("model", data.get("model")), counts[0], counts[1], rate,
                  _number("at", data.get("at")))


def workflows_trust(registry: Registry) -> DirectoryTrust | None:
    """The trust `pools/workflows` gives its files; None if missing; RegistryError if unsafe."""
    if pools_trust(registry) is None:
        return None
    return subdirectory_trust(workflow_dir(registry), "the workflows directory")


def scan_reports(registry: Registry) -> tuple[list[Report], list[RegistryProblem]]:
    """Every valid, trusted workflow report (fresh or not), plus the files that are not.

    Never raises: a refused directory is one problem.
    """
    directory = workflow_dir(registry)
    try:
        trust = workflows_trust(registry)
        if trust is None:
            return [], []
        with os.scandir(directory) as listing:
            names = sorted(d.name for d in listing
                           if d.name.endswith(".json") and not d.name.startswith("."))
    except RegistryError as exc:
        return [], [RegistryProblem(directory, str(exc))]
    except OSError as exc:
        return [], [RegistryProblem(directory, exc.strerror or "unreadable")]
    reports, problems = [], []
    for name in names:
        try:
            reports.append(_report(read_json(directory / name, trust, MAX_REPORT_BYTES)[0]))
        except FileNotFoundError:
            continue  # the workflow ended since the listing
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(RegistryProblem(directory / name, reason or "unreadable"))
    return reports, problems


def remaining(registry: Registry, model: str, now: float | None = None) -> Remaining | None:
    """The fresh workflow reports for `model`, summed; None when there is none.

    Files with problems are skipped (`scan_reports` lists them).
    """
    now = time.time() if now is None else now
    fresh = [r for r in scan_reports(registry)[0]
             if r.model == model and now - r.at <= FRESH_FOR]
    if not fresh:
        return None
    return Remaining(len(fresh), sum(r.done for r in fresh), sum(r.total for r in fresh),
                     sum(r.rate for r in fresh))
