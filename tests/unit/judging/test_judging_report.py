"""SUMMARY.json, the table and `nerschat judge-report` on canned output files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from nerschat.cli.main import cli
from nerschat.judging.report import ReportError, read_lines, summarize, summary_table


def pair_line(i: int, a: str, b: str, winner: str, labels: tuple[str, str],
              gold: str | None = None) -> dict[str, Any]:
    flipped = labels == ("A", "A") or labels == ("B", "B")
    line = {"id": str(i), "mode": "pairwise", "winner": winner,
            "consistent": not flipped and "tie" not in labels or labels == ("tie", "tie"),
            "flipped": flipped, "model_a": a, "model_b": b,
            "verdicts": [{"order": "ab", "label": labels[0]}, {"order": "ba", "label": labels[1]}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5}, "error": None}
    if gold:
        line["gold"] = gold
    return line


def pairwise_lines() -> list[dict[str, Any]]:
    lines = []
    for i in range(12):
        lines.append(pair_line(i, "strong", "weak", "a", ("A", "B"), gold="a"))
    for i in range(12, 16):
        lines.append(pair_line(i, "weak", "strong", "tie", ("A", "A"), gold="b"))
    for i in range(16, 20):
        lines.append(pair_line(i, "strong", "middle", "tie", ("tie", "tie"), gold="tie"))
    for i in range(20, 26):
        lines.append(pair_line(i, "middle", "weak", "a", ("A", "B")))
    for i in range(26, 30):
        lines.append(pair_line(i, "strong", "middle", "a", ("A", "B")))
    lines.append({"id": "x", "mode": "pairwise", "winner": None, "error": "HTTP 500: boom"})
    return lines


def test_pairwise_summary_counts_rates_bias_and_ranking() -> None:
    summary = summarize(pairwise_lines())
    assert (summary["mode"], summary["items"], summary["judged"], summary["errors"]) == (
        "pairwise", 31, 30, 1)
    assert summary["tokens"] == 30 * 15
    outcomes = summary["outcomes"]
    assert (outcomes["a"]["count"], outcomes["b"]["count"], outcomes["tie"]["count"]) == (22, 0, 8)
    assert outcomes["a"]["low"] < 22 / 30 < outcomes["a"]["high"]
    assert summary["flipped"] == 4 and summary["inconsistent"] == 4
    assert summary["position_bias"]["ab"] == {"first": 26, "second": 0, "tie": 4}
    assert summary["position_bias"]["ba"] == {"first": 4, "second": 22, "tie": 4}
    assert [row["model"] for row in summary["ranking"]] == ["strong", "middle", "weak"]
    pair = next(p for p in summary["pairs"] if p["opponent"] == "weak" and p["model"] == "strong")
    assert (pair["wins"]["count"], pair["tie"]["count"], pair["losses"]["count"]) == (12, 4, 0)
    agreement = summary["agreement"]
    assert agreement["n"] == 20 and agreement["accuracy"] == pytest.approx(16 / 20)
    assert agreement["confusion"] == [[12, 0, 0], [0, 0, 4], [0, 0, 4]]
    json.dumps(summary)  # plain data
    assert summary_table(summary).row_count > 10


def test_score_and_classify_summaries() -> None:
    score_lines = [{"id": str(i), "mode": "score", "score": s, "expected_score": s - 0.2,
                    "probs": {str(v): 0.2 for v in range(1, 6)}, "group": g, "gold": gold,
                    "error": None}
                   for i, (s, g, gold) in enumerate([(5, "x", 5), (3, "x", 4), (4, "y", 4),
                                                     (1, "y", 1)])]
    summary = summarize(score_lines)
    assert summary["scale"] == [1, 5]
    assert summary["groups"]["x"]["mean"] == pytest.approx(4.0)
    assert summary["groups"]["y"]["histogram"] == {"1": 1, "2": 0, "3": 0, "4": 1, "5": 0}
    assert summary["groups"]["x"]["expected_mean"] == pytest.approx(3.8)
    assert summary["agreement"]["accuracy"] == pytest.approx(0.75)
    assert summary["agreement"]["mean_abs_error"] == pytest.approx(0.25)

    classify_lines = [{"id": str(i), "mode": "classify", "label": said, "probability": 0.8,
                       "probs": {"correct": 0.5, "incorrect": 0.5}, "gold": gold, "error": None}
                      for i, (said, gold) in enumerate([("correct", "correct"),
                                                        ("incorrect", "correct"),
                                                        ("incorrect", "incorrect")])]
    summary = summarize(classify_lines)
    assert summary["labels"] == ["correct", "incorrect"]
    assert summary["outcomes"]["incorrect"]["count"] == 2
    assert summary["agreement"]["confusion"] == [[1, 1], [0, 1]]
    assert summary["mean_probability"] == pytest.approx(0.8)


def test_best_of_lines_of_todays_judge() -> None:
    lines = [{"id": "1", "index": 0, "reference": 0, "agreement": True, "error": None},
             {"id": "2", "index": None, "reference": 1, "agreement": False, "error": None}]
    summary = summarize(lines)
    assert summary["mode"] == "best-of" and summary["chosen"] == {"0": 1, "disagree": 1}
    assert summary["agreement"]["accuracy"] == pytest.approx(0.5)


def write_lines(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_judge_report_writes_summary_and_pngs(tmp_path: Path) -> None:
    output = write_lines(tmp_path / "judged.jsonl", pairwise_lines())
    result = CliRunner().invoke(cli, ["judge-report", str(output)])
    assert result.exit_code == 0, result.output
    report = tmp_path / "judged.report"
    assert json.loads((report / "SUMMARY.json").read_text())["mode"] == "pairwise"
    for name in ("win-rates.png", "ranking.png", "position-bias.png", "confusion.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    scores = write_lines(tmp_path / "scored.jsonl", [
        {"id": str(i), "mode": "score", "score": i % 5 + 1, "group": "g", "error": None}
        for i in range(10)])
    result = CliRunner().invoke(cli, ["judge-report", str(scores), "--json",
                                      "-d", str(tmp_path / "r")])
    assert result.exit_code == 0 and json.loads(result.output)["groups"]["g"]["n"] == 10
    assert (tmp_path / "r" / "scores.png").exists()


def test_bad_output_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "error": null}\n{oops\n')
    with pytest.raises(ReportError, match=r"bad.jsonl:2: malformed JSON"):
        read_lines(bad)
    with pytest.raises(ReportError, match="no such output file"):
        read_lines(tmp_path / "missing.jsonl")


def test_judge_report_with_all_ties_and_a_mean_at_the_scale_end(tmp_path: Path) -> None:
    # every pair tied (no wins: zero-width lower error bars); every score at the top
    output = write_lines(tmp_path / "ties.jsonl", [
        pair_line(i, "x", "y", "tie", ("A", "A")) for i in range(6)])
    result = CliRunner().invoke(cli, ["judge-report", str(output)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ties.report" / "win-rates.png").exists()
    scores = [{"id": str(i), "mode": "score", "score": s, "group": "g", "error": None,
               "probs": {str(v): 0.1 for v in range(1, 11)}} for i, s in enumerate([10, 10, 8])]
    group = summarize(scores)["groups"]["g"]
    assert group["high"] == 10.0 and group["low"] < group["mean"]


# Markup, mathtext, a terminal escape and a bell: every one is data, shown as text.
HOSTILE = "[/]x [bold]$\\frac{$\x1b[2J\x07"


def hostile_lines(mode: str) -> list[dict[str, Any]]:
    if mode == "pairwise":
        lines = [pair_line(i, HOSTILE + "a", HOSTILE + "b", "a", ("A", "B"), gold="a")
                 for i in range(4)]
        for line in lines:
            line["group"] = HOSTILE
            line["verdicts"][0]["order"] = HOSTILE
    elif mode == "score":
        lines = [{"id": str(i), "mode": "score", "score": 1 + i % 2, "expected_score": 1.5,
                  "probs": {"1": 0.5, "2": 0.5}, "group": HOSTILE + str(i % 2), "gold": 1,
                  "error": None} for i in range(4)]
    elif mode == "classify":
        lines = [{"id": str(i), "mode": "classify", "label": [HOSTILE, "b"][i % 2],
                  "probability": 0.5, "probs": {HOSTILE: 0.5, "b": 0.5}, "group": HOSTILE,
                  "gold": HOSTILE, "error": None} for i in range(4)]
    elif mode == "best-of":
        lines = [{"id": str(i), "mode": "best-of", "index": 0, "reference": 0, "error": None}
                 for i in range(4)]
    else:  # a mode nerschat never writes
        lines = [{"id": "1", "mode": HOSTILE, "error": None}]
    return [*lines, {"id": "e", "mode": mode, "error": f"HTTP 400: {HOSTILE}"}]


@pytest.mark.parametrize("mode", ["pairwise", "score", "classify", "best-of", HOSTILE])
def test_hostile_values_in_every_printed_field_are_shown_as_text(tmp_path: Path,
                                                                 mode: str) -> None:
    (tmp_path / "[").mkdir()  # the path holds "[/]" too
    output = write_lines(tmp_path / "[" / "]out\x1b[2J.jsonl", hostile_lines(mode))
    result = CliRunner().invoke(cli, ["judge-report", str(output)])
    assert result.exit_code == 0, result.output
    assert result.exception is None
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J" in result.output and "[/]" in result.output
    if mode != "best-of":
        assert "[/]x [bold]$\\frac{$" in result.output  # the data, verbatim
    written = sorted(p.name for p in (tmp_path / "[" / "]out\x1b[2J.report").glob("*.png"))
    expected = {"pairwise": ["confusion.png", "position-bias.png", "ranking.png",
                             "win-rates.png"],
                "score": ["confusion.png", "scores.png"],
                "classify": ["confusion.png", "win-rates.png"],
                "best-of": ["confusion.png"]}.get(mode, [])
    assert written == expected


def test_summary_table_cells_are_text_not_markup() -> None:
    from io import StringIO

    from rich.console import Console

    for mode in ("pairwise", "score", "classify", "best-of", HOSTILE):
        out = StringIO()
        Console(file=out, width=200, color_system=None).print(
            summary_table(summarize(hostile_lines(mode))))
        shown = out.getvalue()
        assert "\x1b" not in shown and "HTTP 400: [/]x [bold]$\\frac{$\\x1b[2J\\x07" in shown
