"""Every bad input line is one `FILE:LINE: field 'x': ...` error, or an errors-file entry."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nerschat.workflows.batch import parse_batch_request
from nerschat.workflows.core import (
    ItemOrder,
    Plan,
    errors_path,
    plan,
    task_records,
)
from nerschat.workflows.corpus import Document
from nerschat.workflows.embed import EmbedTask
from nerschat.workflows.inputs import FieldError, InputError, parse_line
from nerschat.workflows.judge import JudgeOptions, candidate_order, parse_judge_item
from nerschat.workflows.tasks import BatchTask, JudgeTask


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def plan_judge(path: Path, skip: bool = False, template: str | None = None) -> Plan:
    task = JudgeTask(JudgeOptions(template=template) if template else None)
    return plan(task, path, path.with_name("out.jsonl"), shards=1, skip_invalid=skip, run=0)


GOOD = json.dumps({"id": "a", "question": "q?", "answers": ["x", "y"]})


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "in.jsonl:2: malformed JSON"),
    ('["a"]', "in.jsonl:2: a line must be a JSON object"),
    ('{"question": "q", "answers": ["x"]}', "in.jsonl:2: field 'id': missing"),
    ('{"id": 2.50, "question": "q", "answers": ["x"]}',
     "in.jsonl:2: field 'id': must be a string, got float 2.5; quote it"),
    ('{"id": "b", "question": "q"}', "in.jsonl:2: field 'answers': missing"),
    ('{"id": "b", "question": "q", "answers": []}', "in.jsonl:2: field 'answers': empty candidate list"),
    ('{"id": "b", "question": "q", "answers": ["x", 3]}', "field 'answers[1]': must be a string"),
    ('{"id": "b", "answers": ["x"]}', "in.jsonl:2: field 'question': used by the prompt template"),
    ('{"id": "b", "question": {"a": 1}, "answers": ["x"]}',
     "in.jsonl:2: field 'question': used by the prompt template: must be a string or number"),
    ('{"id": "b", "question": "q", "answers": ["x"], "candidates": "c"}',
     "in.jsonl:2: field 'candidates': shadows"),
    ('{"id": "b", "question": "q", "answers": ["x", "y"], "reference": 2}',
     "in.jsonl:2: field 'reference': 2 is out of range for 2 answers"),
    ('{"id": "b", "question": "q\\ud83d", "answers": ["x"]}',
     "in.jsonl:2: field 'question': lone surrogate"),
    ('{"id": "b", "question": "q", "answers": ["ok", "\\udc00"]}',
     "in.jsonl:2: field 'answers[1]': lone surrogate"),
    ('{"id": "a", "question": "q", "answers": ["x"]}', "field 'id': duplicate id 'a' (first on line 1)"),
])
def test_bad_judge_lines_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "in.jsonl", GOOD, line)
    with pytest.raises(InputError) as info:
        plan_judge(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_skip_invalid_writes_errors_and_plans_the_good(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", GOOD, "{oops", "",
                 json.dumps({"id": "c", "question": "q\ud83d", "answers": ["1"]}),
                 json.dumps({"id": "d", "question": "q", "answers": ["1"]}),
                 GOOD)
    planned = plan_judge(path, skip=True)
    assert planned.todo == 2 and planned.invalid == 3
    errors = [json.loads(x) for x in errors_path(tmp_path / "out.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [2, 4, 6]
    shard_in = planned.shards[0][0].read_text().splitlines()
    assert [json.loads(x)["id"] for x in shard_in] == ["a", "d"]


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(InputError, match="in.jsonl:2: not UTF-8"):
        plan_judge(path)


def test_batch_ids_are_never_rewritten(tmp_path: Path) -> None:
    body = {"model": "m", "prompt": "p"}
    path = write(tmp_path / "in.jsonl",
                 json.dumps({"custom_id": 2.50, "method": "POST", "url": "/v1/completions",
                             "body": body}))
    with pytest.raises(InputError, match="field 'custom_id': must be a string, got float"):
        plan(BatchTask(), path, tmp_path / "out.jsonl", shards=1, skip_invalid=False, run=0)


def test_shuffle_is_seeded_per_item() -> None:
    item = parse_judge_item({"id": "x", "question": "q", "answers": list("abcdef")})
    options = JudgeOptions(shuffle=True, seed=7)
    assert candidate_order(item, options) == candidate_order(item, options)
    assert sorted(candidate_order(item, options)) == list(range(6))
    assert candidate_order(item, JudgeOptions()) == list(range(6))


@pytest.mark.parametrize(("record", "message"), [
    ({"method": "POST", "url": "/v1/completions", "body": {"model": "m"}}, "field 'custom_id': missing"),
    ({"custom_id": "1", "method": "GET", "url": "/v1/completions", "body": {"model": "m"}}, "only POST"),
    ({"custom_id": "1", "method": "POST", "url": "/v1/files", "body": {"model": "m"}}, "is not one of"),
    ({"custom_id": "1", "method": "POST", "url": "/v1/completions"}, "'body'"),
    ({"custom_id": "1", "method": "POST", "url": "/v1/completions", "body": {}}, "body.model"),
])
def test_bad_batch_requests(record: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(FieldError) as info:
        parse_batch_request(record)
    assert message in f"field {info.value.field!r}: {info.value}"


def docs(source: Path, **kwargs: str) -> list[Document | InputError]:
    """What the embed task makes of each record of `source`, through the core's reader."""
    task = EmbedTask(id_field=kwargs.get("id_field", "id"),
                     text_field=kwargs.get("text_field", "text"))
    found: list[Document | InputError] = []
    for number, raw, error in task_records(task, source):
        if error is not None:
            found.append(error)
            continue
        try:
            found.append(parse_line(source, number, raw, task.parse)[1])
        except InputError as exc:
            found.append(exc)
    return found


def test_corpus_jsonl_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"id": "1", "text": "  "}', '{"text": "x"}',
                 '{"id": "2", "text": "y\\ud800"}', '{"id": "3", "text": "z"}')
    found = docs(path)
    assert "c.jsonl:1: field 'text': empty text" in str(found[0])
    assert "c.jsonl:2: field 'id': missing" in str(found[1])
    assert "c.jsonl:3: field 'text': lone surrogate" in str(found[2])
    assert found[3] == Document("3", "z")


def test_corpus_directory(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("alpha")
    (tmp_path / "docs" / "sub" / "b.md").write_text("beta")
    (tmp_path / "docs" / "bad.txt").write_bytes(b"\xff\xfe")
    found = docs(tmp_path / "docs")
    assert [d.id for d in found if isinstance(d, Document)] == ["a.txt", "sub/b.md"]
    assert Document("sub/b.md", "beta") in found
    assert any("bad.txt:1: not UTF-8" in str(d) for d in found)


def test_corpus_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc": ["x", "y"], "body": ["one", "two"]}), tmp_path / "c.parquet")
    found = docs(tmp_path / "c.parquet", id_field="doc", text_field="body")
    assert found == [Document("x", "one"), Document("y", "two")]
    with pytest.raises(InputError, match="c.parquet: field 'id': no such column \\(columns: doc, body\\)"):
        docs(tmp_path / "c.parquet")


def test_plan_keeps_the_input_order_as_hashes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    with open(path, "w") as handle:
        for i in range(1000):
            handle.write(json.dumps({"id": f"q{i}", "question": "q", "answers": ["x"]}) + "\n")
    planned = plan_judge(path)
    assert isinstance(planned.order, ItemOrder) and len(planned.order) == 1000
    assert planned.order.path.stat().st_size == 8 * 1000
    hashes = planned.order.read()
    assert hashes.dtype == np.uint64 and len(set(hashes.tolist())) == 1000


def test_huge_json_integer_is_a_line_error_or_skipped(tmp_path: Path) -> None:
    huge = '{"id": "b", "question": "q?", "answers": ["x", "y"], "n": ' + "9" * 5000 + "}"
    path = write(tmp_path / "in.jsonl", GOOD, huge)
    with pytest.raises(InputError, match="in.jsonl:2: malformed JSON"):
        plan_judge(path)
    assert plan_judge(path, skip=True).invalid == 1
    corpus = write(tmp_path / "c.jsonl", '{"id": "1", "text": "x", "n": ' + "1" * 5000 + "}")
    assert "c.jsonl:1: malformed JSON" in str(docs(corpus)[0])


def test_file_name_that_is_not_utf8_is_a_file_error(tmp_path: Path) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    (root / "good.txt").write_text("alpha")
    with open(os.path.join(os.fsencode(root), b"bad\xff.txt"), "wb") as handle:
        handle.write(b"beta")
    found = docs(root)
    assert Document("good.txt", "alpha") in found
    bad = [d for d in found if isinstance(d, InputError)]
    assert len(bad) == 1 and "file name is not valid UTF-8" in str(bad[0])
    str(bad[0]).encode("utf-8")  # printable


@pytest.mark.parametrize(("kind", "message"), [("fifo", "is a pipe"), ("device", "is a device"),
                                               ("missing", "input file not found")])
def test_input_that_is_not_a_file_says_what_it_is(tmp_path: Path, kind: str,
                                                  message: str) -> None:
    path = tmp_path / "in.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/null")
    with pytest.raises(InputError, match=message):
        plan_judge(path)
    with pytest.raises(InputError, match=message):
        docs(path)


def test_corrupt_parquet_blames_the_input(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = tmp_path / "c.parquet"
    path.write_bytes(b"PAR1" + b"\x00garbage" * 10 + b"PAR1")
    with pytest.raises(InputError, match="c.parquet: not a readable Parquet file"):
        docs(path)


def test_batch_model_of_the_wrong_type_says_so() -> None:
    record = {"custom_id": "1", "method": "POST", "url": "/v1/completions", "body": {"model": 5}}
    with pytest.raises(FieldError, match="must be a string, got int 5"):
        parse_batch_request(record)


@pytest.mark.parametrize("choices", [[], "oops"])
async def test_run_batch_never_records_a_malformed_success_as_ok(choices: object) -> None:
    import httpx2

    from nerschat.workflows.batch import BatchRequest, run_batch_request

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"id": "c", "choices": choices})

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler),
                                  base_url="http://x.test") as http:
        out = await run_batch_request(http, BatchRequest("1", "POST", "/v1/chat/completions",
                                                         {"model": "m"}))
    assert out["error"] is not None and "malformed reply" in out["error"]
