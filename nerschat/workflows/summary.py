"""End-of-run summaries of the merged output (read as a stream), as rich tables."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from nerschat.workflows.core import RunReport


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
                  f"{report.merged['written']} -> {escape(str(report.output))}")
    table.add_row("errors", str(report.merged["errors"]))
    table.add_row("throughput", f"{report.items_per_second:.2f} items/s "
                                f"({report.seconds:.1f} s)")
    if tokens:
        table.add_row("tokens (prompt+completion)", f"{tokens}")


def _error_rows(table: Table, errors: Counter[str]) -> None:
    for message, count in errors.most_common(3):
        table.add_row(f"error x{count}", escape(message))


def judge_summary(report: RunReport) -> Table:
    """Run counts, choices, agreement with the reference and both orders, top errors."""
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
    return table


def batch_summary(report: RunReport) -> Table:
    """Run counts, HTTP statuses, tokens and top errors of a run-batch output."""
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
