"""Markup, mathtext and terminal escapes in data, options, paths and replies are shown as text.

`nerschat judge` (every mode), `judge-report` and `chat` against a stub: input values
(model names, groups), option values (`--labels`), the output path, what the user types and
what a server answers all reach the terminal. None may be read as rich markup (a stray `[/]`
raised MarkupError after all results were written) or reach it raw (`\\x1b[2J` clears it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet

HOSTILE = "[/]x [bold]$\\frac{$\x1b[2J"


def nerschat(*args: str, stdin: str | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nerschat.cli.main", *args], input=stdin,
                          capture_output=True, text=True, timeout=120, cwd=cwd)


def record(mode: str, i: int) -> dict[str, Any]:
    line: dict[str, Any] = {"id": f"{HOSTILE}{i}", "question": f"{HOSTILE} {i}?",
                            "group": f"{HOSTILE}{i % 2}"}
    if mode == "best-of":
        line.update(answers=[HOSTILE, "b"], reference=0)
        del line["group"]
    elif mode == "pairwise":
        line.update(answer_a=HOSTILE, answer_b="b", model_a=f"{HOSTILE}a", model_b="b",
                    gold="a")
    else:
        line["answer"] = HOSTILE
    return line


def shown_safely(result: subprocess.CompletedProcess[str]) -> None:
    text = result.stdout + result.stderr
    assert "Traceback" not in text and "MarkupError" not in text, text[-1500:]
    assert "\x1b" not in text, text[-1500:]


@pytest.mark.parametrize("mode,options", [
    ("best-of", []), ("pairwise", []), ("score", ["--scale", "1-3"]),
    ("classify", ["--labels", f"{HOSTILE},b"])])
def test_judge_and_report_show_hostile_values_as_text(fleet: StubFleet, registry: Registry,
                                                      tmp_path: Path, mode: str,
                                                      options: list[str]) -> None:
    fleet.start_ready(1, "m", capacity=8)
    folder = tmp_path / "["  # the output path holds "[/]" and an escape too
    folder.mkdir()
    source, output = folder / "in.jsonl", folder / "]out\x1b[2J.jsonl"
    source.write_text("".join(json.dumps(record(mode, i)) + "\n" for i in range(4)))
    # a short relative path, so the tables show it whole
    result = nerschat("judge", "[/in.jsonl", "-o", "[/]out\x1b[2J.jsonl", "--mode", mode,
                      *options, "--reasoning-tokens", "4", "--registry", str(registry.path),
                      "--no-progress", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-1500:]
    shown_safely(result)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 4 and all(line["error"] is None for line in lines)
    assert "[/]out\\x1b[2J" in result.stderr.replace("\n", "")  # the path, shown escaped
    if mode != "best-of":
        assert "[/]x [bold]$\\frac{$\\x1b[2J" in result.stderr  # a group or label
    report = nerschat("judge-report", "[/]out\x1b[2J.jsonl", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-1500:]
    shown_safely(report)
    assert "plot:" in report.stderr


def test_chat_shows_typed_served_and_error_text_as_text(fleet: StubFleet,
                                                        registry: Registry) -> None:
    fleet.start_ready(1, "m")
    typed = "\n".join([
        "/x[/]\x1b[2J",          # an unknown command, echoed
        "hello [/] there \x1b[2J",  # the stub echoes the prompt's tail in its reply
        "/model",
        f"/model {HOSTILE}",      # a model nobody serves: an error naming it
        "hi",
        "/model m",
        "/quit"]) + "\n"
    result = nerschat("chat", "--model", "m", "--registry", str(registry.path),
                      "--timeout", "2", stdin=typed)
    assert result.returncode == 0, result.stderr[-1500:]
    shown_safely(result)
    out = result.stdout
    assert "unknown command /x[/]\\x1b[2J" in out
    assert "hello [/] there \\x1b[2J" in out  # the reply, verbatim but escaped
    assert "now talking to " + HOSTILE.replace("\x1b", "\\x1b") in out
    assert "error:" in out and "[/]x [bold]" in out.split("error:", 1)[1]
