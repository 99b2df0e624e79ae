"""End-of-run summaries: what the merged output says, as rich tables."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table

from nerschat.workflows.orchestrate import RunReport


def _lines(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _run_rows(table: Table, report: RunReport, tokens: int) -> None:
    table.add_row("items in input", str(report.total))
    if report.invalid:
        table.add_row("invalid lines skipped", str(report.invalid))
    table.add_row("already done (resumed)", str(report.skipped_done))
    table.add_row("processed this run", str(report.processed))
    table.add_row("written to output", f"{report.merged['written']} -> {report.output}")
    table.add_row("errors", str(report.merged["errors"]))
    table.add_row("throughput", f"{report.items_per_second:.2f} items/s "
                                f"({report.seconds:.1f} s)")
    if tokens:
        table.add_row("tokens (prompt+completion)", f"{tokens}")


def judge_summary(report: RunReport) -> Table:
    lines = _lines(report.output)
    ok = [r for r in lines if r.get("error") is None]
    choices = Counter(r["index"] for r in ok)
    tokens = sum(sum((r.get("usage") or {}).values()) for r in ok)
    table = Table(title="judge summary", show_header=False, title_justify="left")
    _run_rows(table, report, tokens)
    for index, count in sorted(choices.items(), key=lambda kv: (kv[0] is None, kv[0])):
        label = "orders disagree" if index is None else f"chose candidate {index}"
        table.add_row(label, f"{count} ({count / max(1, len(ok)):.0%})")
    graded = [r for r in ok if "correct" in r]
    if graded:
        right = sum(bool(r["correct"]) for r in graded)
        table.add_row("matches reference", f"{right}/{len(graded)} ({right / len(graded):.0%})")
    if any("agreement" in r for r in ok):
        agree = sum(bool(r.get("agreement")) for r in ok)
        table.add_row("both orders agree", f"{agree}/{len(ok)} ({agree / max(1, len(ok)):.0%})")
    errors = Counter((r["error"] or "")[:60] for r in lines if r.get("error") is not None)
    for message, count in errors.most_common(3):
        table.add_row(f"error x{count}", message)
    return table


def batch_summary(report: RunReport) -> Table:
    lines = _lines(report.output)
    statuses = Counter((r.get("response") or {}).get("status_code", "no response") for r in lines)
    tokens = sum(((r.get("response") or {}).get("body") or {}).get("usage", {}).get(
        "total_tokens", 0) for r in lines if isinstance((r.get("response") or {}).get("body"), dict))
    table = Table(title="run-batch summary", show_header=False, title_justify="left")
    _run_rows(table, report, tokens)
    for status, count in sorted(statuses.items(), key=str):
        table.add_row(f"HTTP {status}", str(count))
    return table
