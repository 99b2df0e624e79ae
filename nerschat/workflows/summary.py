"""End-of-run summaries of the merged output (read as a stream), as rich tables.

Each summary also reports what the run cost: GPU-hours of the jobs serving its model during
the run (from the jobs' start and end times and their GPUs: pool members as their pool
recorded them, other registry entries from their start to now), items per GPU-hour, and the
GPU-hours the items still missing would need at that rate.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from nerschat.cli.common import one_line
from nerschat.registry import Registry, RegistryError
from nerschat.workflows.core import RunReport, parts_dir, stored_config


@dataclass(frozen=True)
class RunCost:
    """GPU-hours (and job hours) of the servers of one model over a run's time window."""

    gpu_hours: float
    replica_hours: float
    servers: int

    def per_gpu_hour(self, items: int) -> float | None:
        """Items per GPU-hour (None without GPU-hours or items)."""
        return items / self.gpu_hours if self.gpu_hours > 0 and items > 0 else None

    def per_replica_hour(self, items: int) -> float | None:
        """Items per job hour, for servers without GPUs (stub, CPU)."""
        return items / self.replica_hours if self.replica_hours > 0 and items > 0 else None


def _overlap_hours(start: float | None, end: float, window: tuple[float, float]) -> float:
    if start is None:
        return 0.0
    return max(0.0, min(end, window[1]) - max(start, window[0])) / 3600.0


def run_cost(registry: Registry, model: str, started: float, ended: float) -> RunCost:
    """GPU-hours of `model`'s servers between `started` and `ended` (epoch seconds).

    Pool members count from their job's start to their end as the pool recorded it; entries
    of the registry outside pools from their start to `ended`. Servers that left the
    registry without a pool recording them are not known (and not counted).
    """
    from nerschat.pool.state import list_states

    window = (started, ended)
    gpu_hours = replica_hours = 0.0
    seen: set[str] = set()
    servers = 0
    for state in list_states(registry):
        if state.serves != model and state.model != model:
            continue
        for member in state.members:
            seen.add(member.id)
            hours = _overlap_hours(member.started_at, member.ended_at or ended, window)
            servers += hours > 0
            replica_hours += hours
            gpu_hours += hours * member.gpus
    entries = []
    with contextlib.suppress(RegistryError, OSError):
        entries = registry.scan().entries
    for entry in entries:
        if entry.model != model or entry.id in seen or entry.state == "pending":
            continue
        hours = _overlap_hours(entry.started_at or None, ended, window)
        servers += hours > 0
        replica_hours += hours
        gpu_hours += hours * len([g for g in (entry.gpus or "").split(",") if g])
    return RunCost(gpu_hours, replica_hours, servers)


def cost_pairs(cost: RunCost, processed: int, left: int) -> list[tuple[str, str]]:
    """(label, value): GPU-hours used, items per GPU-hour, GPU-hours the `left` items need.

    Servers without GPUs (stub, CPU) get the same per job hour.
    """
    pairs = [("GPU-hours used", f"{cost.gpu_hours:.3f} ({cost.servers} server(s), "
                                f"{cost.replica_hours:.3f} job hours)")]
    per_gpu = cost.per_gpu_hour(processed)
    per_job = cost.per_replica_hour(processed)
    if per_gpu is not None:
        pairs += [("items per GPU-hour", f"{per_gpu:.0f}"),
                  ("GPU-hours for the rest", f"{left / per_gpu:.3f} ({left} items left)")]
    elif per_job is not None:
        pairs += [("items per job hour (no GPUs)", f"{per_job:.0f}"),
                  ("job hours for the rest", f"{left / per_job:.3f} ({left} items left)")]
    return pairs


def cost_rows(table: Table, cost: RunCost, processed: int, left: int) -> None:
    """`cost_pairs` as rows of a summary table."""
    for label, value in cost_pairs(cost, processed, left):
        table.add_row(label, value)


def cost_text(cost: RunCost, processed: int, left: int) -> str:
    """`cost_pairs` on one line (for runs summarised in a sentence, e.g. embedding)."""
    return "; ".join(f"{label} {value}" for label, value in cost_pairs(cost, processed, left))


def model_cost_rows(table: Table, registry: Registry | str | None, model: str,
                    seconds: float, processed: int, left: int) -> None:
    """Cost rows of `model`'s servers over the `seconds` that just ended.

    None are added when the registry cannot be read.
    """
    try:
        reg = Registry.of(registry)
    except (RegistryError, OSError):
        return
    ended = time.time()
    cost_rows(table, run_cost(reg, model, ended - seconds, ended), processed, left)


def _cost_rows(table: Table, report: RunReport, registry: Registry | str | None,
               model: str | None) -> None:
    model = model or stored_config(parts_dir(report.output)).get("model")
    if isinstance(model, str) and model:
        model_cost_rows(table, registry, model, report.seconds, report.processed,
                        report.merged.get("missing", 0))


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _run_rows(table: Table, report: RunReport, tokens: int) -> None:
    table.add_row("items in input", str(report.total))
    if report.invalid:
        table.add_row("invalid lines skipped", str(report.invalid))
    table.add_row("already done (resumed)", str(report.skipped_done))
    table.add_row("processed this run", str(report.processed))
    table.add_row("written to output",
                  f"{report.merged['written']} -> {escape(one_line(str(report.output)))}")
    table.add_row("errors", str(report.merged["errors"]))
    table.add_row("throughput", f"{report.items_per_second:.2f} items/s "
                                f"({report.seconds:.1f} s)")
    if tokens:
        table.add_row("tokens (prompt+completion)", f"{tokens}")


def _error_rows(table: Table, errors: Counter[str]) -> None:
    for message, count in errors.most_common(3):
        table.add_row(f"error x{count}", escape(one_line(message)))


def judge_summary(report: RunReport, registry: Registry | str | None = None,
                  model: str | None = None) -> Table:
    """Run counts, choices, agreement with the reference and both orders, top errors, cost.

    The cost rows are those of `run_cost` for `model` (default: the run's own) in
    `registry` (default: `$NERSCHAT_REGISTRY`).
    """
    choices: Counter[Any] = Counter()
    errors: Counter[str] = Counter()
    tokens = ok = graded = right = agree = with_agreement = 0
    for r in _lines(report.output):
        if r.get("error") is not None:
            errors[str(r["error"])[:60]] += 1
            continue
        ok += 1
        choices[r.get("index")] += 1
        tokens += sum((r.get("usage") or {}).values())
        if "correct" in r:
            graded += 1
            right += bool(r["correct"])
        if "agreement" in r:
            with_agreement += 1
            agree += bool(r["agreement"])
    table = Table(title="judge summary", show_header=False, title_justify="left")
    _run_rows(table, report, tokens)
    for index, count in sorted(choices.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
        label = "orders disagree" if index is None else f"chose candidate {index}"
        table.add_row(label, f"{count} ({count / max(1, ok):.0%})")
    if graded:
        table.add_row("matches reference", f"{right}/{graded} ({right / graded:.0%})")
    if with_agreement:
        table.add_row("both orders agree", f"{agree}/{ok} ({agree / max(1, ok):.0%})")
    _error_rows(table, errors)
    _cost_rows(table, report, registry, model)
    return table


def batch_summary(report: RunReport, registry: Registry | str | None = None,
                  model: str | None = None) -> Table:
    """Run counts, HTTP statuses, tokens, top errors and cost of a run-batch output.

    `registry` and `model` as for `judge_summary` (a batch names its models per line: without
    `model`, the cost rows need the one the run stored).
    """
    statuses: Counter[Any] = Counter()
    errors: Counter[str] = Counter()
    tokens = 0
    for r in _lines(report.output):
        response = r.get("response") or {}
        statuses[response.get("status_code", "no response")] += 1
        body = response.get("body")
        if isinstance(body, dict) and isinstance(body.get("usage"), dict):
            tokens += int(body["usage"].get("total_tokens") or 0)
        if r.get("error") is not None:
            errors[str(r["error"])[:60]] += 1
    table = Table(title="run-batch summary", show_header=False, title_justify="left")
    _run_rows(table, report, tokens)
    for status, count in sorted(statuses.items(), key=str):
        table.add_row(f"HTTP {status}", str(count))
    _error_rows(table, errors)
    _cost_rows(table, report, registry, model)
    return table


def failure_line(report: RunReport) -> str | None:
    """A one-line failure message when the output holds nothing but errors, else None."""
    merged = report.merged
    if not report.total and report.invalid:
        return (f"no valid items: all {report.invalid} input lines are invalid; see "
                f"{report.output.with_name(report.output.stem + '.errors.jsonl')}")
    if merged["written"] and merged["errors"] == merged["written"]:
        first = None
        for r in _lines(report.output):
            first = r.get("error")
            break
        return (f"all {merged['written']} items failed (first error: {str(first)[:120]}); "
                f"see {report.output}")
    return None
