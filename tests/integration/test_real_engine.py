"""Real vLLM (the CPU build) with the two local models, through the pilot and the registry.

Needs scripts/setup-local-engine.sh (scripts/test.sh runs it). One module-wide pair of
pilots serves every test here: vLLM takes minutes to start on CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import openai
import pytest

import nerschat
from nerschat.pilot.local_engine import engine_python, resolve_local_model
from nerschat.registry import Registry
from tests.integration.conftest import REPO

# vLLM on CPU takes minutes to start: the first test also waits for the pilots.
pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(1800)]

LLM, EMBEDDER = "gemma-3-270m", "all-MiniLM-L6-v2"
NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


def test_chat_completion_and_stream(real_registry: Registry) -> None:
    client = nerschat.connect(LLM, registry=real_registry, wait_timeout=60)
    reply = client.chat.completions.create(
        model=LLM, max_tokens=16, messages=[{"role": "user", "content": "Say hello."}])
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0  # type: ignore[union-attr]
    stream = client.chat.completions.create(
        model=LLM, max_tokens=16, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Count to five."}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text and chunks[-1].usage is not None


def test_structured_choice_and_prefill(real_registry: Registry) -> None:
    client = nerschat.connect(LLM, registry=real_registry, wait_timeout=60)
    choices = ["Paris", "Lyon", "Marseille"]
    for _ in range(3):
        reply = client.chat.completions.create(
            model=LLM, max_tokens=8, temperature=1.0,
            messages=[{"role": "user", "content": "Capital of France?"}],
            extra_body={"structured_outputs": {"choice": choices}})
        assert reply.choices[0].message.content in choices
    prefill = client.chat.completions.create(
        model=LLM, max_tokens=12,
        messages=[{"role": "user", "content": "Name a colour."},
                  {"role": "assistant", "content": "The colour I pick is"}],
        extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert prefill.choices[0].message.content


def test_unauthorized_without_the_key(real_registry: Registry) -> None:
    (entry,) = real_registry.endpoints(LLM)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=entry.url, api_key="wrong", max_retries=0).models.list()
    ok = openai.OpenAI(base_url=entry.url, api_key=entry.api_key).models.list()
    assert [m.id for m in ok.data] == [LLM]


def reference_vectors(texts: list[str], tmp_path: Path) -> np.ndarray:
    source, target = tmp_path / "texts.jsonl", tmp_path / "ref.npy"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    subprocess.run([str(engine_python()), str(REPO / "scripts" / "reference_embeddings.py"),
                    str(resolve_local_model("local:minilm").path()), str(source), str(target)],
                   check=True, timeout=300, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    return np.load(target)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_embeddings_match_sentence_transformers(real_registry: Registry, tmp_path: Path) -> None:
    texts = ["The cat sits on the mat.", "Perlmutter has four A100 GPUs per node.",
             "Embeddings map text to vectors.", "ünïcödé and emoji 🚀 text"]
    client = nerschat.connect(EMBEDDER, registry=real_registry, wait_timeout=60)
    served = np.array([d.embedding for d in
                       client.embeddings.create(model=EMBEDDER, input=texts).data])
    assert cosine(served, reference_vectors(texts, tmp_path)).min() > 0.999


def test_judge_with_the_real_model(real_registry: Registry, tmp_path: Path) -> None:
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    items = [json.loads(x) for x in
             (REPO / "examples" / "data" / "judge_sample.jsonl").read_text().splitlines()[:6]]
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    result = subprocess.run([*NERSCHAT, "judge", str(source), "-o", str(output), "--registry",
                             str(real_registry.path), "--model", LLM, "--max-tokens", "16",
                             "--shuffle", "--no-progress"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["id"] for r in lines] == [i["id"] for i in items]
    for line, item in zip(lines, items):
        assert line["error"] is None
        assert line["answer"] == item["answers"][line["index"]]
        assert line["logprobs"]  # vLLM gives the candidates' log-probabilities


def test_embed_bundled_corpus_and_search(real_registry: Registry, tmp_path: Path) -> None:
    corpus = REPO / "examples" / "data" / "corpus.jsonl"
    outdir = tmp_path / "emb"
    result = subprocess.run([*NERSCHAT, "embed", str(corpus), "-o", str(outdir), "--registry",
                             str(real_registry.path), "--model", EMBEDDER, "--shards", "2",
                             "--no-progress"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr
    found = nerschat.load_embeddings(outdir)
    docs = [json.loads(x) for x in corpus.read_text().splitlines()]
    assert found.ids == [d["id"] for d in docs] and found.vectors.shape == (3000, 384)
    sample = [0, 7, 100, 1500, 2999]
    reference = reference_vectors([docs[i]["text"] for i in sample], tmp_path)
    assert cosine(np.asarray(found.vectors[sample]), reference).min() > 0.999
    client = nerschat.connect(EMBEDDER, registry=real_registry, wait_timeout=60)
    query = np.array(client.embeddings.create(
        model=EMBEDDER, input=["Which planet is red because of iron oxide dust?"]).data[0].embedding)
    best = int(np.argmax(found.vectors @ query))
    assert found.ids[best] == "planet-mars"
