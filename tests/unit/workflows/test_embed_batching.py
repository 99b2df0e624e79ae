"""Embedding never lets one document stop the run; ids come back exactly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx2
import numpy as np
import pytest

import nerschat
from nerschat.workflows.core import item_hash, plan, result_line
from nerschat.workflows.corpus import Document
from nerschat.workflows.embed import (
    BODY_LIMIT,
    Embedder,
    EmbedError,
    EmbedOptions,
    EmbedTask,
    NpySink,
    ServerLimits,
    plan_batches,
    shard_files,
)
from nerschat.workflows.inputs import InputError
from tests.conftest import make_endpoint

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
    assert [i for b in batches for i in b] == list(range(len(texts)))


def test_each_endpoint_gets_batches_of_its_own_limits() -> None:
    big = make_endpoint(id="big", kind="embedding", api="tei", max_batch_size=32,
                        max_input_tokens=512)
    small = make_endpoint(id="small", kind="embedding", api="tei", max_batch_size=8,
                          max_batch_tokens=20)
    task = EmbedTask()

    def fill(endpoint: object) -> int:
        packer = task.packer(endpoint)  # type: ignore[arg-type]
        count = 0
        while packer.add(Document("d", "four words of text")):
            count += 1
        return count

    assert fill(big) == 32
    assert fill(small) == 2  # 7 estimated tokens each, 20 per request
    assert ServerLimits.of(small).max_batch_tokens == 20
    smallest = ServerLimits.smallest([big, small, make_endpoint(api="openai")])
    assert (smallest.api, smallest.batch_size) == ("openai", 8)


def test_prompt_names_need_tei_on_every_endpoint() -> None:
    task = EmbedTask(EmbedOptions(prompt_name="query"))
    task.check_endpoints([make_endpoint(api="tei")])
    with pytest.raises(EmbedError, match="use --prefix"):
        task.check_endpoints([make_endpoint(api="tei"), make_endpoint(id="e2", api="openai")])
    with pytest.raises(Exception, match="prompt names need TEI"):
        Embedder(httpx2.AsyncClient(), ServerLimits("openai", 8, None, None),
                 EmbedOptions(prompt_name="query"), "m")


def vector(value: float) -> str:
    import base64

    row = np.full(DIM, value, dtype=np.float32)
    return base64.b64encode((row / np.linalg.norm(row)).tobytes()).decode()


def results_dir(outdir: Path, docs: list[tuple[str, dict[str, object]]]) -> np.ndarray:
    """Write one results file of the core for `docs` (raw id, result); returns the order."""
    work = outdir / ".work"
    work.mkdir(parents=True, exist_ok=True)
    order = []
    with open(work / "results-000-0000.jsonl", "wb") as handle:
        for doc_id, result in docs:
            raw = json.dumps({"id": doc_id, "text": "t"}).encode()
            order.append(item_hash(raw))
            handle.write(result_line(order[-1], result.get("error") is None, result))
    return np.array(order, dtype=np.uint64)


def test_ids_stay_distinct_and_compact(tmp_path: Path) -> None:
    ids = ["a", "a\x00", "a\x00\x00", "x" * 20_000, "é\U0001f600"]
    docs = [(i, {"id": i, "error": None, "v": vector(1.0), "truncated": False, "tokens": 2})
            for i in ids[:4]] + [(ids[4], {"id": ids[4], "error": "rejected"})]
    order = results_dir(tmp_path, docs)
    NpySink().merge(tmp_path / ".work", order, tmp_path, {"model": "m"})
    assert shard_files(tmp_path, 0)[1].stat().st_size < 21_000
    loaded_ids, vectors = nerschat.load_embeddings(tmp_path)
    assert loaded_ids == ids
    assert np.isnan(vectors[4]).all() and not np.isnan(vectors[:4]).any()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["errors"] == {ids[4]: "rejected"} and manifest["tokens"] == 8


def test_a_shard_of_only_rejected_documents_gets_the_run_width(tmp_path: Path) -> None:
    order = results_dir(tmp_path, [("a", {"id": "a", "error": None, "v": vector(1.0)}),
                                   ("b", {"id": "b", "error": "rejected"})])
    counts = NpySink(shards=2).merge(tmp_path / ".work", order, tmp_path, {"model": "m"})
    assert counts["errors"] == 1
    ids, vectors = nerschat.load_embeddings(tmp_path)
    assert ids == ["a", "b"] and vectors.shape == (2, DIM) and np.isnan(vectors[1]).all()


def test_unchanged_shards_are_kept_and_a_missing_result_refuses(tmp_path: Path) -> None:
    docs = [(f"d{i}", {"id": f"d{i}", "error": None, "v": vector(i + 1.0)}) for i in range(6)]
    order = results_dir(tmp_path, docs)
    sink = NpySink(shards=3)
    sink.merge(tmp_path / ".work", order, tmp_path, {"model": "m"})
    files = [shard_files(tmp_path, n)[0] for n in range(3)]
    for path in files:
        os.utime(path, ns=(1, 1))
    sink.merge(tmp_path / ".work", order, tmp_path, {"model": "m"})
    assert all(path.stat().st_mtime_ns == 1 for path in files)
    sink.merge(tmp_path / ".work", order, tmp_path, {"model": "other"})
    assert all(path.stat().st_mtime_ns != 1 for path in files)  # another configuration
    extra = np.append(order, np.uint64(12345))
    with pytest.raises(EmbedError, match="has no result"):
        NpySink(shards=1).merge(tmp_path / ".work", extra, tmp_path / "o", {"model": "m"})


def test_plan_reports_duplicate_ids_with_file_and_line(tmp_path: Path) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i % 5}" if i == 7 else f"d{i}",
                                          "text": f"text {i}"}) + "\n" for i in range(10)))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="c.jsonl:8: field 'id': duplicate id 'd2' "
                                         "\\(first on line 3\\)"):
        plan(EmbedTask(), corpus, out, shards=3, skip_invalid=False, run=0)
    planned = plan(EmbedTask(), corpus, out, shards=3, skip_invalid=True, run=0)
    assert planned.todo == 9 and planned.invalid == 1 and len(planned.shards) == 3
    shard_ids = [json.loads(x)["id"] for x in planned.shards[2][0].read_text().splitlines()]
    assert shard_ids == ["d6", "d8", "d9"]
    assert json.loads((out / "invalid.jsonl").read_text())["line"] == 8


def two_replicas(registry: nerschat.Registry, bad: str) -> httpx2.AsyncClient:
    """A routed client over replicas a (answering `bad`ly) and b (healthy), /v1/embeddings."""
    from nerschat.client.connect import ROUTED_BASE_URL
    from nerschat.client.routing import EndpointPool, RoutingSettings
    from nerschat.client.transport import AsyncFailoverTransport

    for number, name in enumerate("ab"):
        registry.publish(make_endpoint(id=name, model="m", kind="embedding",
                                       url=f"http://{name}.test:{8000 + number}/v1"))

    def handle(request: httpx2.Request) -> httpx2.Response:
        texts = json.loads(request.content)["input"]
        width = DIM
        rows = [{"index": i, "embedding": [0.5] * width} for i in range(len(texts))]
        if request.url.host.startswith("a."):
            if bad == "width":
                rows = [{"index": i, "embedding": [0.5] * 7} for i in range(len(texts))]
            elif bad == "count":
                rows = rows[:-1]
            elif bad == "index":
                rows = [{**row, "index": 0} for row in rows]
        return httpx2.Response(200, json={"data": rows})

    transport = AsyncFailoverTransport(EndpointPool(registry, "m"),
                                       inner=httpx2.MockTransport(handle),
                                       settings=RoutingSettings(wait_timeout=5))
    return httpx2.AsyncClient(transport=transport, base_url=ROUTED_BASE_URL)


@pytest.fixture
def test_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock endpoints live on `*.test` hosts (set before the registry is made)."""
    monkeypatch.setenv("NERSCHAT_ALLOWED_HOSTS", "*.test")


@pytest.mark.parametrize("bad", ["width", "count", "index"])
async def test_a_bad_embedding_replica_is_routed_around(test_hosts: None,
                                                        registry: nerschat.Registry,
                                                        bad: str) -> None:
    async with two_replicas(registry, bad) as http:
        shared = {"dimension": DIM} if bad == "width" else {}
        embed = Embedder(http, ServerLimits("openai", 8, None, None), EmbedOptions(), "m", shared)
        for _ in range(6):
            outcome = await embed.embed(["x", "y", "z"])
            assert not outcome.errors
            assert all(len(np.frombuffer(__import__("base64").b64decode(row or ""),
                                         dtype=np.float32)) == DIM for row in outcome.rows)


async def test_vectors_of_another_width_from_the_only_replica_are_an_error() -> None:
    def handle(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, json={"data": [{"index": 0, "embedding": [1.0] * 7}]})

    http = httpx2.AsyncClient(transport=httpx2.MockTransport(handle), base_url="http://x")
    embed = Embedder(http, ServerLimits("openai", 8, None, None), EmbedOptions(), "m",
                     {"dimension": DIM})
    with pytest.raises(EmbedError, match="dimension 7, not 4"):
        await embed.embed(["x"])


def test_changing_the_shard_count_recomputes_no_vector(tmp_path: Path) -> None:
    docs = [(f"d{i}", {"id": f"d{i}", "error": None, "v": vector(i + 1.0)}) for i in range(6)]
    order = results_dir(tmp_path / "out", docs)
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": "t"}) + "\n" for i in range(6)))
    NpySink(shards=2).merge(tmp_path / "out" / ".work", order, tmp_path / "out", {"model": "m"})
    for shards in (1, 3, 6):
        task = EmbedTask(shards=shards)
        planned = plan(task, corpus, tmp_path / "out", shards=shards, skip_invalid=False,
                       run=1)
        assert planned.todo == 0  # every vector is reused
        task.sink.merge(tmp_path / "out" / ".work", planned.order, tmp_path / "out",
                        {"model": "m"})
        ids, vectors = nerschat.load_embeddings(tmp_path / "out")
        assert ids == [f"d{i}" for i in range(6)] and not np.isnan(vectors).any()
        assert not shard_files(tmp_path / "out", shards)[0].exists()  # stale shards removed
