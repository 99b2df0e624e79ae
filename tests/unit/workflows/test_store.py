from __future__ import annotations

import json
from pathlib import Path

from nerschat.workflows.embed import ServerLimits, plan_batches
from nerschat.workflows.orchestrate import split
from nerschat.workflows.store import ResultStore


def test_merge_is_exactly_once_in_input_order(tmp_path: Path) -> None:
    store = ResultStore(tmp_path / "parts")
    store.ensure()
    _, first = store.shard_paths(0, 0)
    _, second = store.shard_paths(1, 0)
    first.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "b", "v": 1, "error": None},
        {"id": "a", "v": 1, "error": "HTTP 503"},
        {"id": "c", "v": 1, "error": None},
    ]) + '{"id": "torn", "er')  # a writer killed mid-line
    second.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "a", "v": 2, "error": None},
        {"id": "b", "v": 2, "error": "late failure"},  # never replaces a success
    ]))
    assert store.done_ids() == {"a", "b", "c"}
    counts = store.merge(["a", "b", "c", "d"], tmp_path / "out.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [(r["id"], r["v"]) for r in lines] == [("a", 2), ("b", 1), ("c", 1)]
    assert counts == {"written": 3, "errors": 0, "missing": 1}
    assert store.next_run() == 2


def test_split_is_contiguous_and_balanced() -> None:
    chunks = split([{"i": i} for i in range(10)], 3)
    assert [len(c) for c in chunks] == [4, 3, 3]
    assert [r["i"] for c in chunks for r in c] == list(range(10))
    assert len(split([{"i": 0}], 8)) == 1


def test_batches_respect_count_tokens_and_body_size() -> None:
    texts = ["word " * 10] * 100
    tei = ServerLimits("tei", batch_size=32, max_input_tokens=512, max_batch_tokens=100)
    batches = plan_batches(texts, tei, None)
    assert all(len(b) <= 32 for b in batches)
    assert all(sum(len(texts[i]) // 3 + 1 for i in b) <= 100 for b in batches)
    assert [i for b in batches for i in b] == list(range(100))
    big = ["x" * 700_000] * 4
    openai_limits = ServerLimits("openai", batch_size=64, max_input_tokens=None,
                                 max_batch_tokens=None)
    assert [len(b) for b in plan_batches(big, openai_limits, None)] == [2, 2]
    assert [len(b) for b in plan_batches(texts, openai_limits, 10)] == [10] * 10
