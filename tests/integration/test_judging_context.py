"""Judging near the context limit of a stub that refuses prompt + max_tokens over it.

The stub counts words as tokens, so prompts of one-letter words make the client's estimate
low: the reasoning request is refused for context length (HTTP 400), retried with less
reasoning, and the item is judged. An item whose prompt alone does not fit gets one error
line naming the limit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nerschat.judging import make_task
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters, set_faults
from nerschat.workflows.core import run_items

LIMIT = 600


def line(mode: str, item_id: str, words: int) -> dict[str, Any]:
    record: dict[str, Any] = {"id": item_id, "question": "a " * words}
    if mode == "best-of":
        record["answers"] = ["yes", "no"]
    elif mode == "pairwise":
        record.update(answer_a="yes", answer_b="no")
    else:
        record["answer"] = "yes"
    return record


@pytest.mark.parametrize("mode", ["best-of", "pairwise", "score", "classify"])
def test_context_refusal_is_retried_with_less_reasoning(fleet: StubFleet, registry: Registry,
                                                        tmp_path: Path, mode: str) -> None:
    endpoint = fleet.start_ready(1, "m", max_model_len=LIMIT, check_context=1)[0]
    assert endpoint.max_model_len == LIMIT
    set_faults(endpoint, strict_context=True)
    source, output = tmp_path / "items.jsonl", tmp_path / "out.jsonl"
    source.write_text(json.dumps(line(mode, "near", 480)) + "\n")
    task = make_task(mode, reasoning_tokens=256, attempts=1)
    run_items(task, source, output, registry=str(registry.path), show_progress=False)
    result = json.loads(output.read_text())
    assert result["error"] is None and result["reasoning"]
    counters = server_counters(endpoint)
    refused = counters["nerschat_stub_requests_received_total"] - \
        counters["nerschat_stub_requests_served_total"]
    assert refused >= 1  # the first reasoning request did not fit

    source.write_text(json.dumps(line(mode, "over", 700)) + "\n")
    run_items(task, source, output, registry=str(registry.path), show_progress=False,
              restart_run=True)
    result = json.loads(output.read_text())
    assert result["error"].startswith(f"prompt too long for the model's context "
                                      f"(max_model_len {LIMIT})")
    assert "maximum context length" in result["error"]
