"""score and classify on the local real model (vLLM CPU build, gemma-3-270m).

The forced choice must always yield an allowed label, and the expected score must lie
within the scale, whatever a small model reasons. Needs scripts/setup-local-engine.sh.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from nerschat.judging import make_task
from nerschat.judging.report import summarize_output
from nerschat.registry import Registry
from nerschat.workflows.core import run_items

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(1800)]

LLM = "gemma-3-270m"
NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]
QUESTIONS = [("What is the capital of France?", "Paris", "Berlin"),
             ("How many legs does a spider have?", "Eight", "Six"),
             ("What is 12 times 12?", "144", "124"),
             ("Which planet is closest to the sun?", "Mercury", "Venus")]


@pytest.fixture
def gemma(real_registry: Registry) -> Registry:
    """The session's real gemma-3-270m pilot (shared with test_real_engine.py)."""
    return real_registry


def write_items(path: Path) -> Path:
    lines = []
    for i, (question, right, wrong) in enumerate(QUESTIONS):
        lines.append({"id": f"{i}-right", "question": question, "answer": right,
                      "reference": right, "group": "right"})
        lines.append({"id": f"{i}-wrong", "question": question, "answer": wrong,
                      "reference": right, "group": "wrong"})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("scale", ["1-10", "0-4"])
def test_score_on_the_real_model(gemma: Registry, tmp_path: Path, scale: str) -> None:
    low, high = (int(v) for v in scale.split("-"))
    output = tmp_path / "scores.jsonl"
    run_items(make_task("score", scale=scale, reasoning_tokens=24, reference=True),
              write_items(tmp_path / "items.jsonl"), output, registry=str(gemma.path),
              show_progress=False, timeout=60)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 8 and all(line["error"] is None for line in lines), lines
    for line in lines:
        assert low <= line["score"] <= high
        assert low <= line["expected_score"] <= high
        assert sum(line["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert set(line["probs"]) == {str(v) for v in range(low, high + 1)}
    summary, _ = summarize_output(output)
    assert set(summary["groups"]) == {"right", "wrong"}


def test_classify_on_the_real_model(gemma: Registry, tmp_path: Path) -> None:
    output = tmp_path / "labels.jsonl"
    labels = "correct=matches the reference;incorrect=contradicts the reference;unsure=cannot tell"
    run_items(make_task("classify", labels=labels, reasoning_tokens=24, reference=True),
              write_items(tmp_path / "items.jsonl"), output, registry=str(gemma.path),
              show_progress=False, timeout=60)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 8 and all(line["error"] is None for line in lines), lines
    for line in lines:
        assert line["label"] in ("correct", "incorrect", "unsure")
        assert 0.0 < line["probability"] <= 1.0
        assert line["probability"] == line["probs"][line["label"]]
        assert sum(line["probs"].values()) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("mode", ["best-of", "pairwise", "score", "classify"])
def test_item_near_the_context_limit_is_judged(gemma: Registry, tmp_path: Path,
                                               mode: str) -> None:
    # gemma-3-270m runs with max_model_len 2048; this prompt is ~1,800 tokens: it fits, but
    # not with 256 tokens of reasoning re-sent in the verdict request.
    line: dict[str, object] = {"id": "near-limit", "question": "token " * 1780}
    if mode == "best-of":
        line["answers"] = ["yes", "no"]
    elif mode == "pairwise":
        line.update(answer_a="yes", answer_b="no")
    else:
        line["answer"] = "yes"
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    source.write_text(json.dumps(line) + "\n")
    run_items(make_task(mode, reasoning_tokens=256), source, output, registry=str(gemma.path),
              show_progress=False, timeout=120)
    result = json.loads(output.read_text())
    assert result["error"] is None, result["error"]
