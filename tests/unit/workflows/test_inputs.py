from __future__ import annotations

import json
from pathlib import Path

import pytest

from nerschat.workflows.batch import parse_batch_request
from nerschat.workflows.corpus import read_corpus
from nerschat.workflows.inputs import InputError, read_records
from nerschat.workflows.judge import JudgeOptions, candidate_order, parse_judge_item
from nerschat.workflows.tasks import JudgeTask


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def judge_records(path: Path, skip: bool = False):  # type: ignore[no-untyped-def]
    task = JudgeTask()
    return read_records(path, task.parse, task.item_id, skip_invalid=skip)


GOOD = json.dumps({"id": "a", "question": "q?", "answers": ["x", "y"]})


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "in.jsonl:2: malformed JSON"),
    ('["a"]', "in.jsonl:2: a line must be a JSON object"),
    ('{"question": "q", "answers": ["x"]}', "in.jsonl:2: field 'id': missing"),
    ('{"id": "b", "question": "q"}', "in.jsonl:2: field 'answers': missing"),
    ('{"id": "b", "question": "q", "answers": []}', "in.jsonl:2: field 'answers': empty candidate list"),
    ('{"id": "b", "question": "q", "answers": ["x", 3]}', "field 'answers[1]': must be a string"),
    ('{"id": "b", "answers": ["x"]}', "in.jsonl:2: field 'question': used by the prompt template"),
    ('{"id": "a", "question": "q", "answers": ["x"]}', "field 'id': duplicate id 'a' (first on line 1)"),
])
def test_bad_judge_lines_name_file_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "in.jsonl", GOOD, line)
    with pytest.raises(InputError) as info:
        judge_records(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_skip_invalid_collects_and_keeps_the_good(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", GOOD, "{oops", "",
                 json.dumps({"id": "c", "question": "q", "answers": ["1"]}))
    parsed = judge_records(path, skip=True)
    assert [i.id for i in parsed.items] == ["a", "c"]
    assert [bad.line for bad in parsed.invalid] == [2]


def test_non_utf8_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD.encode() + b"\n" + b'{"id": "\xff"}\n')
    with pytest.raises(InputError, match="in.jsonl:2: not UTF-8"):
        judge_records(path)


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
    from nerschat.workflows.inputs import FieldError

    with pytest.raises(FieldError) as info:
        parse_batch_request(record)
    assert message in f"field {info.value.field!r}: {info.value}"


def test_corpus_jsonl_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", '{"id": "1", "text": "a"}', '{"id": "1", "text": "b"}')
    with pytest.raises(InputError, match="c.jsonl:2: field 'id': duplicate id '1'"):
        read_corpus(path)
    path = write(tmp_path / "c.jsonl", '{"id": "1", "text": "  "}')
    with pytest.raises(InputError, match="c.jsonl:1: field 'text': empty text"):
        read_corpus(path)
    path = write(tmp_path / "c.jsonl", '{"text": "x"}', '{"id": "2", "text": "y"}')
    corpus = read_corpus(path, skip_invalid=True)
    assert corpus.ids == ["2"] and len(corpus.invalid) == 1


def test_corpus_directory(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.txt").write_text("alpha")
    (tmp_path / "docs" / "sub" / "b.md").write_text("beta")
    (tmp_path / "docs" / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="bad.txt:1: not UTF-8"):
        read_corpus(tmp_path / "docs")
    corpus = read_corpus(tmp_path / "docs", skip_invalid=True)
    assert corpus.ids == ["a.txt", "sub/b.md"] and corpus.texts == ["alpha", "beta"]


def test_corpus_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"doc": ["x", "y"], "body": ["one", "two"]}), tmp_path / "c.parquet")
    corpus = read_corpus(tmp_path / "c.parquet", id_field="doc", text_field="body")
    assert corpus.ids == ["x", "y"]
    with pytest.raises(InputError, match="c.parquet: field 'id': no such column \\(columns: doc, body\\)"):
        read_corpus(tmp_path / "c.parquet")
    with pytest.raises(InputError, match="field 'text': no such column"):
        read_corpus(tmp_path / "c.parquet", id_field="doc")
