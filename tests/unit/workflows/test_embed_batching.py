"""Embedding never lets one document stop the run; ids come back exactly."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import numpy as np
import pytest

import nerschat
from nerschat.workflows.embed import (
    BODY_LIMIT,
    Embedder,
    EmbedOptions,
    ServerLimits,
    _write_manifest,
    plan_batches,
    shard_files,
    write_shard,
)

DIM = 4


def tei_server(limit_words: int, seen: list[int]) -> httpx2.MockTransport:
    """A TEI-like /embed: 413 for a request with any text over `limit_words` words."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        texts = body["inputs"]
        seen.append(len(texts))
        if len(request.content) > 2 * 1024 * 1024:
            return httpx2.Response(413, text="Payload Too Large")
        rows = []
        for text in texts:
            if len(text.split()) > limit_words:
                if not body["truncate"]:
                    return httpx2.Response(413, json={"error": "inputs must have less than "
                                                               f"{limit_words} tokens"})
            rows.append([float(len(text))] * DIM)
        return httpx2.Response(200, json=rows)

    return httpx2.MockTransport(handle)


def embedder(truncate: bool, seen: list[int], limit_words: int = 10) -> Embedder:
    http = httpx2.AsyncClient(transport=tei_server(limit_words, seen), base_url="http://x")
    limits = ServerLimits("tei", 32, 512, None)
    return Embedder(http, limits, EmbedOptions(truncate=truncate), "m")


async def test_one_rejected_document_is_isolated_and_the_rest_embedded() -> None:
    seen: list[int] = []
    texts = ["short"] * 7 + ["long " * 50] + ["short"] * 8
    outcome = await embedder(truncate=False, seen=seen).embed(texts)
    assert list(outcome.errors) == [7] and "rejected" in outcome.errors[7]
    assert outcome.rows[7] is None and all(r is not None for i, r in enumerate(outcome.rows)
                                           if i != 7)
    assert len(seen) <= 1 + 2 * 5  # bisection, not one request per document


async def test_rejected_document_is_truncated_when_allowed() -> None:
    outcome = await embedder(truncate=True, seen=[]).embed(["a b", "w " * 50])
    assert not outcome.errors and outcome.truncated == 1


async def test_a_batch_of_only_rejected_documents_does_not_crash() -> None:
    outcome = await embedder(truncate=False, seen=[]).embed(["w " * 50])
    assert outcome.rows == [None] and list(outcome.errors) == [0]


async def test_text_over_the_body_limit_is_cut_on_the_client() -> None:
    seen: list[int] = []
    big = "word " * (BODY_LIMIT // 4)
    outcome = await embedder(truncate=True, seen=seen, limit_words=10 ** 9).embed([big, "x"])
    assert outcome.truncated == 1 and not outcome.errors
    refused = await embedder(truncate=False, seen=[], limit_words=10 ** 9).embed([big, "x"])
    assert list(refused.errors) == [0] and refused.rows[1] is not None


def test_batches_respect_count_and_body_size() -> None:
    limits = ServerLimits("tei", 4, None, None)
    texts = ["a"] * 10 + ["b" * (BODY_LIMIT - 10), "c" * 100]
    batches = plan_batches(texts, limits, None)
    assert all(len(b) <= 4 for b in batches)
    for b in batches:
        assert sum(len(texts[i]) for i in b) <= BODY_LIMIT or len(b) == 1


def test_ids_stay_distinct_and_compact(tmp_path: Path) -> None:
    ids = ["a", "a\x00", "a\x00\x00", "x" * 20_000, "é\U0001f600"]
    rows = [np.ones(DIM, np.float32)] * 4 + [None]
    write_shard(tmp_path, 0, ids, rows, {"digest": "d", "tokens": 0, "truncated": 0,
                                         "errors": {ids[4]: "rejected"}, "model": "m"})
    assert shard_files(tmp_path, 0)[1].stat().st_size < 21_000
    _write_manifest(tmp_path, 1, EmbedOptions())
    loaded_ids, vectors = nerschat.load_embeddings(tmp_path)
    assert loaded_ids == ids
    assert np.isnan(vectors[4]).all() and not np.isnan(vectors[:4]).any()


def test_a_shard_of_only_rejected_documents_gets_the_run_width(tmp_path: Path) -> None:
    summary = {"digest": "d", "tokens": 0, "truncated": 0, "model": "m"}
    write_shard(tmp_path, 0, ["a"], [np.ones(DIM, np.float32)], {**summary, "errors": {}})
    write_shard(tmp_path, 1, ["b"], [None], {**summary, "errors": {"b": "rejected"}})
    manifest = _write_manifest(tmp_path, 2, EmbedOptions())
    assert manifest["dimension"] == DIM
    ids, vectors = nerschat.load_embeddings(tmp_path)
    assert ids == ["a", "b"] and vectors.shape == (2, DIM) and np.isnan(vectors[1]).all()


def test_limits_are_the_smallest_of_the_replicas() -> None:
    from nerschat.registry import Endpoint

    def entry(**fields: object) -> Endpoint:
        return Endpoint(id="e", kind="embedding", engine="tei", model="m", url="http://h:1/v1",
                        state="ready", api_key=None, pid=1, host="h", slurm_job_id=None,
                        heartbeat_at=0.0, ttl=1.0, **fields)  # type: ignore[arg-type]

    limits = ServerLimits.of([entry(api="tei", max_batch_size=32, max_input_tokens=512),
                              entry(api="tei", max_batch_size=8, max_input_tokens=256)])
    assert (limits.api, limits.batch_size, limits.max_input_tokens) == ("tei", 8, 256)
    assert ServerLimits.of([entry(api="tei"), entry(api="openai")]).api == "openai"
    with pytest.raises(Exception, match="prompt names need TEI"):
        Embedder(httpx2.AsyncClient(), ServerLimits.of([entry(api="openai")]),
                 EmbedOptions(prompt_name="query"), "m")


def test_plan_reports_duplicate_ids_and_reuses_unchanged_shards(tmp_path: Path) -> None:
    from nerschat.workflows.embed import _plan
    from nerschat.workflows.inputs import InputError

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i % 5}" if i == 7 else f"d{i}",
                                          "text": f"text {i}"}) + "\n" for i in range(10)))
    out, work = tmp_path / "out", tmp_path / "out" / ".work"
    out.mkdir()
    with pytest.raises(InputError, match="c.jsonl:8: field 'id': duplicate id 'd2' \\(first at 3\\)"):
        _plan(corpus, out, work, EmbedOptions(), shards=3, skip_invalid=False, id_field="id",
              text_field="text")
    plan = _plan(corpus, out, work, EmbedOptions(), shards=3, skip_invalid=True, id_field="id",
                 text_field="text")
    assert plan.counts == [3, 3, 3] and plan.invalid == 1 and plan.todo == [0, 1, 2]
    shard_ids = [json.loads(x)["id"] for x in (work / "input-00002.jsonl").read_text().splitlines()]
    assert shard_ids == ["d6", "d8", "d9"]
    assert json.loads((out / "invalid.jsonl").read_text())["line"] == 8
