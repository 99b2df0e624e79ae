"""Resume by content hash and configuration, streaming merge, result lines that never fail."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nerschat.workflows.core import (
    ConfigChanged,
    ItemOrder,
    check_config,
    errors_path,
    item_hash,
    merge_results,
    parts_dir,
    plan,
    result_line,
)
from nerschat.workflows.judge import JudgeOptions
from nerschat.workflows.tasks import JudgeTask


def write_items(path: Path, questions: list[str]) -> list[bytes]:
    lines = [json.dumps({"id": f"q{i}", "question": q, "answers": ["x", "y"]})
             for i, q in enumerate(questions)]
    path.write_text("".join(line + "\n" for line in lines))
    return [line.encode() for line in lines]


def finish(workdir: Path, name: str, results: list[tuple[bytes, bool, dict]]) -> None:  # type: ignore[type-arg]
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / name, "ab") as handle:
        for raw, ok, result in results:
            handle.write(result_line(item_hash(raw), ok, result))


def test_edited_line_is_redone_and_the_rest_reused(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    raws = write_items(source, ["a", "b", "c"])
    finish(parts_dir(output), "results-000-0000.jsonl",
           [(raw, True, {"id": f"q{i}", "answer": "old"}) for i, raw in enumerate(raws)])
    raws2 = write_items(source, ["a", "B (edited)", "c"])
    planned = plan(JudgeTask(), source, output, shards=1, skip_invalid=False, run=1)
    assert planned.todo == 1
    assert json.loads(planned.shards[0][0].read_text())["question"] == "B (edited)"
    finish(parts_dir(output), "results-001-0000.jsonl",
           [(raws2[1], True, {"id": "q1", "answer": "new"})])
    counts = merge_results(parts_dir(output), planned.order, output)
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["answer"] for r in lines] == ["old", "new", "old"]
    assert counts == {"written": 3, "errors": 0, "missing": 0}


def test_merge_prefers_success_then_latest_and_skips_torn_lines(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    raws = write_items(source, ["a", "b"])
    workdir = parts_dir(output)
    finish(workdir, "results-000-0000.jsonl", [(raws[0], True, {"id": "q0", "v": 1}),
                                               (raws[1], False, {"id": "q1", "error": "e1"})])
    finish(workdir, "results-001-0000.jsonl", [(raws[0], False, {"id": "q0", "error": "late"}),
                                               (raws[1], False, {"id": "q1", "error": "e2"})])
    with open(workdir / "results-001-0000.jsonl", "ab") as handle:
        handle.write(result_line(item_hash(raws[1]), True, {"id": "q1"})[:-5])  # killed writer
    planned = plan(JudgeTask(), source, output, shards=1, skip_invalid=False, run=2)
    assert planned.todo == 1  # q1 failed: redone
    counts = merge_results(workdir, planned.order, output)
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert lines == [{"id": "q0", "v": 1}, {"id": "q1", "error": "e2"}]
    assert counts == {"written": 2, "errors": 1, "missing": 0}


def test_changed_configuration_is_refused_with_what_changed(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    workdir = parts_dir(output)
    workdir.mkdir()
    first = JudgeTask(JudgeOptions(model="m1"))
    (workdir / "config.json").write_text(json.dumps(first.config()))
    check_config(workdir, output, first.config())  # the same: fine
    check_config(workdir, output, JudgeTask(JudgeOptions()).config())  # model not given yet
    changed = JudgeTask(JudgeOptions(model="m2", template="{question} {candidates}",
                                     both_orders=True))
    with pytest.raises(ConfigChanged) as info:
        check_config(workdir, output, changed.config())
    message = str(info.value)
    assert 'model "m1" -> "m2"' in message and "both_orders false -> true" in message
    assert "template" in message and "--restart" in message and "\n" not in message


def test_result_line_survives_text_that_is_not_unicode() -> None:
    line = result_line(7, True, {"id": "x", "answer": "half an emoji \ud83d"})
    decoded = json.loads(line)
    assert decoded["r"]["answer"] == "half an emoji \ud83d" and decoded["h"] == f"{7:016x}"
    line.decode("utf-8")


def test_a_retried_shard_skips_only_what_it_finished(tmp_path: Path) -> None:
    from nerschat.workflows.core import _shard_items, done_hashes

    source = tmp_path / "input-000-0000.jsonl"
    raws = write_items(source, [f"question {i}" for i in range(50)])
    results = tmp_path / "results-000-0000.jsonl"
    finish(tmp_path, results.name, [(raw, i % 3 != 0, {"id": f"q{i}"})  # every 3rd failed
                                    for i, raw in enumerate(raws[:40])])
    done = done_hashes(results)
    assert done.dtype.name == "uint64" and len(done) == sum(i % 3 != 0 for i in range(40))
    left = [task_item.id for _, _, task_item in _shard_items(JudgeTask(), source, done)]
    assert left == [f"q{i}" for i in range(50) if i % 3 == 0 or i >= 40]
    assert done_hashes(tmp_path / "missing.jsonl").size == 0


def test_a_torn_last_result_line_is_cut_before_appending(tmp_path: Path) -> None:
    from nerschat.workflows.core import done_hashes, open_results

    path = tmp_path / "results-000-0000.jsonl"
    whole = result_line(1, True, {"id": "a"})
    path.write_bytes(whole + result_line(2, True, {"id": "b"})[:-9])  # killed mid-line
    with open_results(path) as handle:
        handle.write(result_line(3, True, {"id": "c"}))
    assert path.read_bytes() == whole + result_line(3, True, {"id": "c"})
    assert done_hashes(path).tolist() == [1, 3]


def test_item_order_reads_back_slices_of_what_was_written(tmp_path: Path) -> None:
    hashes = np.arange(1, 1001, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    hashes.tofile(tmp_path / "order.u64")  # as plan writes it: uint64, input order
    order = ItemOrder(tmp_path / "order.u64", len(hashes))
    assert len(order) == 1000 and order.path == tmp_path / "order.u64"
    assert np.array_equal(order.read(), hashes)
    assert np.array_equal(order[10:20], hashes[10:20])
    assert np.array_equal(order[990:2000], hashes[990:])  # clipped like an array's slice
    assert len(order[500:500]) == 0 and order[5:3].dtype == np.uint64
    assert np.array_equal(ItemOrder(order.path, 1000)[-3:], hashes[-3:])
    with pytest.raises(ValueError, match="contiguous"):
        order[::2]


def test_plan_reads_what_is_done_from_every_results_file(tmp_path: Path) -> None:
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    raws = write_items(source, ["a", "b", "c", "d"])
    workdir = parts_dir(output)
    finish(workdir, "results-000-0000.jsonl", [(raws[0], True, {"id": "q0"}),
                                               (raws[1], False, {"id": "q1", "error": "e"})])
    finish(workdir, "results-001-0000.jsonl", [(raws[2], True, {"id": "q2"}),
                                               (raws[3], False, {"id": "q3", "error": "e"})])
    finish(workdir, "results-002-0000.jsonl", [(raws[3], True, {"id": "q3"})])
    planned = plan(JudgeTask(), source, output, shards=1, skip_invalid=False, run=3)
    assert planned.todo == 1  # q1's only result is an error
    assert json.loads(planned.shards[0][0].read_text())["id"] == "q1"


@pytest.mark.parametrize("bucket", [1 << 16, 7, 1])
def test_placement_finds_each_best_result_in_any_number_of_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bucket: int) -> None:
    from nerschat.workflows import core

    monkeypatch.setattr(core, "BUCKET_RECORDS", bucket)  # 7, 1: many hash ranges, one each
    monkeypatch.setattr(core, "CHUNK", 5)  # slices that split the order and the spill
    rng = np.random.default_rng(7)
    hashes = rng.integers(1, 2**63, size=60, dtype=np.uint64) * np.uint64(2)
    hashes.tofile(tmp_path / "order.u64")
    order = ItemOrder(tmp_path / "order.u64", len(hashes))
    expected: dict[int, tuple[dict[str, object], bool]] = {}
    for number in range(3):  # later files win ties; a success beats any error
        lines = []
        for i in rng.choice(60, size=40, replace=True).tolist():
            ok = bool(rng.integers(2))
            result = {"id": f"q{i}", "file": number, "ok": ok}
            lines.append(result_line(int(hashes[i]), ok, result))
            best = expected.get(i)
            if best is None or ok or not best[1]:
                expected[i] = (result, ok)
        (tmp_path / f"results-00{number}-0000.jsonl").write_bytes(b"".join(lines))
    with core.Placement(core.result_files(tmp_path), order, tmp_path) as placement:
        found = [None if b is None else (json.loads(b[0]), b[1]) for b in placement.bodies()]
        assert found == [expected.get(i) for i in range(60)]
        assert found[10:20] == [None if b is None else (json.loads(b[0]), b[1])
                                for b in placement.bodies(10, 20)]
        assert placement.all_ok() == all(e is not None and e[1] for e in found)
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no scratch file left behind
        "order.u64", "results-000-0000.jsonl", "results-001-0000.jsonl",
        "results-002-0000.jsonl"]


def test_plan_streams_the_order_and_leaves_out_invalid_repeated_and_done_items(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nerschat.workflows import core

    monkeypatch.setattr(core, "CHUNK", 3)  # the order file is written in several blocks
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    good = [json.dumps({"id": f"q{i}", "question": f"{i}?", "answers": ["x", "y"]})
            for i in range(10)]
    lines = [*good[:4], "{not json", *good[4:7], good[2].replace('"2?"', '"again?"'),
             *good[7:]]  # line 5 is invalid, line 9 repeats id q2
    source.write_text("".join(line + "\n" for line in lines))
    finish(parts_dir(output), "results-000-0000.jsonl",
           [(good[1].encode(), True, {"id": "q1"}), (good[8].encode(), True, {"id": "q8"})])
    planned = plan(JudgeTask(), source, output, shards=3, skip_invalid=True, run=1)
    assert planned.invalid == 2 and planned.todo == 8
    assert isinstance(planned.order, ItemOrder)
    assert planned.order.read().tolist() == [item_hash(g.encode()) for g in good]
    sent = [json.loads(line)["id"] for shard_in, _ in planned.shards
            for line in shard_in.read_text().splitlines()]
    assert sent == [f"q{i}" for i in range(10) if i not in (1, 8)]
    errors = [json.loads(line) for line in errors_path(output).read_text().splitlines()]
    assert [e["line"] for e in errors] == [5, 9]

    source.write_text("{not json\n")  # nothing valid: no order file is left behind
    empty = plan(JudgeTask(), source, output, shards=1, skip_invalid=True, run=2)
    assert len(empty.order) == 0 and empty.invalid == 1
    assert not (parts_dir(output) / "order.u64").exists()
