"""Summaries of a judging output file: the SUMMARY.json dictionary and its rich table.

`summarize(lines)` reads the lines of any judging mode (the mode is each line's `mode`; a line
without one is today's best-of judge) and returns plain JSON-able data:

    {"mode", "items", "judged", "errors", "tokens", "top_errors": [[message, count]],
     ... per mode:
     pairwise: "outcomes" {a, b, tie: {count, rate, low, high}}, "inconsistent", "flipped",
               "position_bias" {order: {first, second, tie}}, "pairs" [per model pair],
               "ranking" [Bradley-Terry rows] (with model_a/model_b), "agreement"
     score:    "scale" [low, high], "groups" {group: {n, mean, std, low, high,
               expected_mean, histogram}}, "agreement" (+ "mean_abs_error")
     classify: "labels" [...], "outcomes" {label: {count, rate, low, high}},
               "mean_probability", "groups" {group: {label: count}}, "agreement"
     best-of:  "chosen" {index: count}, "orders_agree", "agreement"}

"agreement" (with gold verdicts): {n, accuracy, kappa, labels, confusion: [[...]]}.

`summary_table` shows every value taken from the file (mode, models, groups, labels, error
messages) as plain text on one line, control characters escaped (`one_line`): an output file
is data, and nothing in it is read as rich markup or reaches the terminal raw.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from nerschat.cli.common import one_line
from nerschat.errors import UsageError
from nerschat.judging import stats

SUMMARY_NAME = "SUMMARY.json"


class ReportError(UsageError, ValueError):
    """An output file that cannot be summarised: `FILE:LINE: what is wrong`."""


def read_lines(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of an output file. Raises ReportError naming FILE:LINE."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such output file")
    lines = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ReportError(f"{path}:{number}: malformed JSON ({exc.msg})") from None
            if not isinstance(value, dict):
                raise ReportError(f"{path}:{number}: a line must be a JSON object")
            lines.append(value)
    return lines


def report_dir(output: str | Path) -> Path:
    """Where the summary and plots of `OUT.jsonl` go: `OUT.report/` beside it."""
    output = Path(output)
    return output.with_name(output.stem + ".report")


def line_mode(line: dict[str, Any]) -> str:
    """The judging mode of an output line (`best-of` for today's judge lines)."""
    mode = line.get("mode")
    return mode if isinstance(mode, str) else "best-of"


def agreement(gold: Sequence[Hashable], predicted: Sequence[Hashable],
              labels: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """Accuracy, Cohen's kappa and the confusion matrix of the judge against gold."""
    names, matrix = stats.confusion_matrix(gold, predicted, labels)
    return {"n": len(gold), "accuracy": stats.accuracy(gold, predicted),
            "kappa": stats.cohen_kappa(gold, predicted, names),
            "labels": [str(n) for n in names], "confusion": matrix.tolist()}


def summarize(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The SUMMARY.json dictionary of one output file's lines (see the module docstring)."""
    modes = Counter(line_mode(line) for line in lines)
    mode = modes.most_common(1)[0][0] if modes else "best-of"
    ok = [line for line in lines if line.get("error") is None and line_mode(line) == mode]
    failed = [line for line in lines if line.get("error") is not None]
    tokens = sum(sum(v for v in (line.get("usage") or {}).values() if isinstance(v, int))
                 for line in ok)
    summary: dict[str, Any] = {
        "mode": mode, "items": len(lines), "judged": len(ok), "errors": len(failed),
        "tokens": tokens,
        "top_errors": [[m, c] for m, c in Counter(
            str(line["error"])[:120] for line in failed).most_common(5)],
    }
    summarize_mode = {"pairwise": _pairwise, "score": _score, "classify": _classify,
                      "best-of": _best_of}[mode] if mode in MODES else _best_of
    summary.update(summarize_mode(ok))
    return summary


def _with_gold(ok: list[dict[str, Any]], key: str) -> tuple[list[Any], list[Any]]:
    graded = [line for line in ok if line.get("gold") is not None and line.get(key) is not None]
    return [line["gold"] for line in graded], [line[key] for line in graded]


def _pairwise(ok: list[dict[str, Any]]) -> dict[str, Any]:
    outcomes = Counter({"a": 0, "b": 0, "tie": 0})
    outcomes.update(str(line["winner"]) for line in ok if line.get("winner") in outcomes)
    bias: dict[str, dict[str, int]] = {}
    for line in ok:
        for verdict in line.get("verdicts") or []:
            order = str(verdict.get("order"))
            slot = {"A": "first", "B": "second", "tie": "tie"}.get(verdict.get("label"))
            if slot:
                bias.setdefault(order, {"first": 0, "second": 0, "tie": 0})[slot] += 1
    result: dict[str, Any] = {
        "outcomes": stats.rates(dict(outcomes)),
        "inconsistent": sum(1 for line in ok if line.get("consistent") is False),
        "flipped": sum(1 for line in ok if line.get("flipped")),
        "position_bias": bias,
    }
    games = [(str(line["model_a"]), str(line["model_b"]),
              {"a": 1.0, "b": 0.0, "tie": 0.5}[line["winner"]])
             for line in ok if line.get("model_a") and line.get("model_b")
             and line.get("winner") in ("a", "b", "tie") and line["model_a"] != line["model_b"]]
    if games:
        pairs: dict[tuple[str, str], Counter[str]] = {}
        for a, b, score in games:
            first, second = sorted((a, b))
            won = "tie" if score == 0.5 else ("wins" if (score == 1.0) == (a == first)
                                               else "losses")
            pairs.setdefault((first, second), Counter())[won] += 1
        result["pairs"] = []
        for (first, second), counts in sorted(pairs.items()):
            shares = stats.rates({k: counts.get(k, 0) for k in ("wins", "tie", "losses")})
            result["pairs"].append({"model": first, "opponent": second, **shares})
        result["ranking"] = stats.bradley_terry_ranking(games)
    gold, predicted = _with_gold(ok, "winner")
    if gold:
        result["agreement"] = agreement(gold, predicted, ["a", "b", "tie"])
    return result


def _score(ok: list[dict[str, Any]]) -> dict[str, Any]:
    scores = [line["score"] for line in ok if isinstance(line.get("score"), int)]
    low, high = _scale(ok, scores)
    groups: dict[str, list[dict[str, Any]]] = {}
    for line in ok:
        if isinstance(line.get("score"), int):
            groups.setdefault(str(line.get("group") or "all"), []).append(line)
    result: dict[str, Any] = {"scale": [low, high], "groups": {}}
    for name, members in sorted(groups.items()):
        chosen = [m["score"] for m in members]
        expected = [m["expected_score"] for m in members
                    if isinstance(m.get("expected_score"), (int, float))]
        interval = stats.mean_interval(chosen)
        if interval["low"] is not None and interval["high"] is not None:
            interval["low"] = max(float(low), interval["low"])  # the scale bounds the mean
            interval["high"] = min(float(high), interval["high"])
        result["groups"][name] = {
            **interval,
            "expected_mean": stats.mean_interval(expected)["mean"],
            "histogram": stats.histogram(chosen, low, high)}
    gold, predicted = _with_gold(ok, "score")
    if gold:
        labels = list(range(low, high + 1))
        result["agreement"] = agreement(gold, predicted, labels)
        result["agreement"]["mean_abs_error"] = sum(
            abs(g - p) for g, p in zip(gold, predicted)) / len(gold)
    return result


def _scale(ok: list[dict[str, Any]], scores: list[int]) -> tuple[int, int]:
    """The scale's ends, from the labels of the probabilities (else the scores seen)."""
    for line in ok:
        probs = line.get("probs")
        if isinstance(probs, dict) and probs:
            values = [int(k) for k in probs if str(k).lstrip("-").isdigit()]
            if values:
                return min(values), max(values)
    return (min(scores), max(scores)) if scores else (0, 0)


def _classify(ok: list[dict[str, Any]]) -> dict[str, Any]:
    labels: list[str] = []
    for line in ok:
        for label in (line.get("probs") or {}) or [line.get("label")]:
            if isinstance(label, str) and label not in labels:
                labels.append(label)
    counts = Counter(dict.fromkeys(labels, 0))
    counts.update(line["label"] for line in ok if isinstance(line.get("label"), str))
    probabilities = [line["probability"] for line in ok
                     if isinstance(line.get("probability"), (int, float))]
    groups: dict[str, Counter[str]] = {}
    for line in ok:
        if isinstance(line.get("label"), str):
            groups.setdefault(str(line.get("group") or "all"), Counter())[line["label"]] += 1
    result: dict[str, Any] = {
        "labels": labels, "outcomes": stats.rates(dict(counts)),
        "mean_probability": stats.mean_interval(probabilities)["mean"],
        "groups": {name: dict(c) for name, c in sorted(groups.items())},
    }
    gold, predicted = _with_gold(ok, "label")
    if gold:
        result["agreement"] = agreement(gold, predicted, labels)
    return result


def _best_of(ok: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = Counter("disagree" if line.get("index") is None else str(line["index"])
                     for line in ok)
    result: dict[str, Any] = {"chosen": dict(sorted(chosen.items()))}
    both = [line for line in ok if "agreement" in line]
    if both:
        result["orders_agree"] = stats.rates({
            "agree": sum(bool(line["agreement"]) for line in both),
            "disagree": sum(not line["agreement"] for line in both)})
    graded = [line for line in ok if isinstance(line.get("reference"), int)]
    if graded:
        result["agreement"] = agreement(
            [line["reference"] for line in graded],
            [-1 if line.get("index") is None else line["index"] for line in graded])
    return result


MODES = ("pairwise", "score", "classify", "best-of")


def write_summary(summary: dict[str, Any], directory: str | Path) -> Path:
    """Write `SUMMARY.json` into `directory` (created); returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SUMMARY_NAME
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def summarize_output(output: str | Path, directory: str | Path | None = None
                     ) -> tuple[dict[str, Any], Path]:
    """Summarise an output file and write its SUMMARY.json (default: `report_dir(output)`)."""
    summary = summarize(read_lines(output))
    return summary, write_summary(summary, directory or report_dir(output))


def _pct(row: dict[str, float]) -> str:
    return f"{row['rate']:.1%} [{row['low']:.1%}, {row['high']:.1%}] (n={row['count']})"


def _cell(value: object, limit: int | None = None) -> Text:
    """`value` as one line of plain text (no markup, control characters escaped).

    A `Text` (a label of this module's own) is kept as it is.
    """
    if isinstance(value, Text):
        return value
    text = one_line(str(value))
    return Text(text if limit is None else text[:limit])


def summary_table(summary: dict[str, Any]) -> Table:
    """The summary as a two-column rich table (rates with their 95% intervals).

    Every cell is plain text (`_cell`): names and messages from the file are never markup.
    """
    mode = summary["mode"]
    table = Table(title=_cell(f"judge summary ({mode})"), show_header=False,
                  title_justify="left")

    def row(label: object, value: object, limit: int | None = None) -> None:
        table.add_row(_cell(label), _cell(value, limit))

    row("items", summary["items"])
    row("judged", summary["judged"])
    row("errors", summary["errors"])
    if summary.get("tokens"):
        row("tokens (prompt+completion)", summary["tokens"])
    for name, counts in (summary.get("outcomes") or {}).items():
        row(f"{'winner ' if mode == 'pairwise' else ''}{name}", _pct(counts))
    if mode == "pairwise":
        row("orders disagree (counted as tie)", summary["inconsistent"])
        row(Text("  of which flipped A<->B"), summary["flipped"])
        for order, counts in sorted(summary.get("position_bias", {}).items()):
            row(f"order {order}: first/second/tie",
                f"{counts['first']}/{counts['second']}/{counts['tie']}")
        for ranked in summary.get("ranking", []):
            row(f"#{ranked['rank']} {ranked['model']}",
                f"{ranked['rating']:.0f} [{ranked['low']:.0f}, {ranked['high']:.0f}] "
                f"({ranked['wins']}W {ranked['ties']}T {ranked['losses']}L)")
    if mode == "score":
        for name, group in summary["groups"].items():
            mean = "-" if group["mean"] is None else f"{group['mean']:.2f}"
            interval = ("" if group["low"] is None
                        else f" [{group['low']:.2f}, {group['high']:.2f}]")
            expected = ("" if group["expected_mean"] is None
                        else f", expected {group['expected_mean']:.2f}")
            row(f"score {name}", f"{mean}{interval} (n={group['n']}{expected})")
    if mode == "classify" and summary.get("mean_probability") is not None:
        row("mean probability of the label", f"{summary['mean_probability']:.2f}")
    if mode == "best-of":
        for index, count in summary["chosen"].items():
            row("orders disagree" if index == "disagree" else f"chose candidate {index}", count)
    agreement_row = summary.get("agreement")
    if agreement_row:
        kappa = "-" if agreement_row["kappa"] is None else f"{agreement_row['kappa']:.3f}"
        row("accuracy vs gold", f"{agreement_row['accuracy']:.1%} (n={agreement_row['n']})")
        row("Cohen's kappa vs gold", kappa)
    for message, count in summary.get("top_errors", [])[:3]:
        row(f"error x{count}", message, limit=60)
    return table
