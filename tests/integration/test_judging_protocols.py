"""Every judging protocol end to end over a stub replica: run, merge, summarise, plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nerschat.judging import make_task
from nerschat.judging.plots import draw
from nerschat.judging.report import summarize_output
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters
from nerschat.workflows.core import run_items
from nerschat.workflows.inputs import InputError

MODELS = ["alpha", "beta", "gamma"]


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def items(mode: str, count: int) -> list[dict[str, Any]]:
    lines = []
    for i in range(count):
        line: dict[str, Any] = {"id": f"{mode}-{i}", "question": f"What is {i} + {i}?"}
        if mode == "pairwise":
            line.update(answer_a=str(2 * i), answer_b=str(2 * i + 1),
                        model_a=MODELS[i % 3], model_b=MODELS[(i + 1) % 3], gold="a")
        elif mode == "best-of":
            line.update(answers=[str(2 * i), str(i)], reference=0)
        else:
            line.update(answer=str(2 * i), group=MODELS[i % 2])
            line["gold"] = 7 if mode == "score" else "correct"
        lines.append(line)
    return lines


@pytest.mark.slow
@pytest.mark.parametrize("mode,options", [
    ("pairwise", {}), ("score", {"scale": "1-10"}),
    ("classify", {"labels": "correct=right;incorrect=wrong;unsure=cannot tell"}),
    ("best-of", {"both_orders": True})])
def test_protocol_over_a_stub(fleet: StubFleet, registry: Registry, tmp_path: Path, mode: str,
                              options: dict[str, Any]) -> None:
    fleet.start_ready(1, "m1", capacity=16)
    source = write(tmp_path / "items.jsonl", items(mode, 24))
    output = tmp_path / "judged.jsonl"
    task = make_task(mode, reasoning_tokens=8, **options)
    report = run_items(task, source, output, registry=str(registry.path), shards=2,
                       show_progress=False, timeout=30)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert report.merged["written"] == 24 and [line["id"] for line in lines] == [
        f"{mode}-{i}" for i in range(24)]
    assert all(line["error"] is None and line["mode"] == mode for line in lines)
    if mode == "pairwise":
        assert {line["winner"] for line in lines} <= {"a", "b", "tie"}
        assert all(len(line["verdicts"]) == 2 for line in lines)
        for line in lines:  # an order flip is reported and counted as a tie
            winners = [v["winner"] for v in line["verdicts"]]
            assert line["consistent"] == (winners[0] == winners[1])
            assert line["winner"] == (winners[0] if line["consistent"] else "tie")
    elif mode == "score":
        assert all(1 <= line["score"] <= 10 for line in lines)
        assert all(1 <= line["expected_score"] <= 10 for line in lines)
    elif mode == "classify":
        assert {line["label"] for line in lines} <= {"correct", "incorrect", "unsure"}
        assert all(0 < line["probability"] <= 1 for line in lines)
    summary, path = summarize_output(output)
    assert path == tmp_path / "judged.report" / "SUMMARY.json"
    assert summary["mode"] == mode and summary["judged"] == 24
    if mode == "pairwise":
        assert [row["model"] for row in summary["ranking"]] != []
    if mode != "best-of":
        assert summary["agreement"]["n"] == 24
    assert draw(summary, path.parent)


@pytest.mark.slow
def test_missing_template_field_stops_before_any_request(fleet: StubFleet, registry: Registry,
                                                         tmp_path: Path) -> None:
    endpoint = fleet.start_ready(1, "m1")[0]
    lines = items("score", 3)
    del lines[2]["answer"]
    source = write(tmp_path / "items.jsonl", lines)
    with pytest.raises(InputError, match=r"items.jsonl:3: field 'answer': used by the prompt"):
        run_items(make_task("score"), source, tmp_path / "out.jsonl",
                  registry=str(registry.path), show_progress=False, timeout=30)
    counters = server_counters(endpoint)
    assert counters["nerschat_stub_requests_received_total"] == 0
