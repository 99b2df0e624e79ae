"""Judge, run-batch and embed over stub replicas: resumability, exactly-once, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nerschat
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters, wait_until

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


def received(endpoint: nerschat.Endpoint) -> int:
    return int(server_counters(endpoint)["nerschat_stub_requests_received_total"])


def count_lines(parts: Path) -> int:
    total = 0
    for path in parts.glob("results-*.jsonl"):
        total += path.read_bytes().count(b"\n")
    return total



def write_batch(path: Path, count: int, model: str = "m1") -> None:
    with open(path, "w") as handle:
        for i in range(count):
            handle.write(json.dumps({
                "custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": model, "max_tokens": 8,
                         "messages": [{"role": "user", "content": f"item {i}"}]}}) + "\n")


@pytest.mark.slow
def test_run_batch_20000_items_survive_replica_and_client_kills(
        fleet: StubFleet, registry: Registry, tmp_path: Path) -> None:
    total = 20_000
    pilots = [fleet.start("m1", capacity=48, latency=0.005) for _ in range(3)]
    endpoints = [fleet.wait_ready(p) for p in pilots]
    source, output = tmp_path / "batch.jsonl", tmp_path / "out.jsonl"
    write_batch(source, total)
    parts = output.with_name(output.name + ".parts")
    command = [*NERSCHAT, "run-batch", "-i", str(source), "-o", str(output), "--registry",
               str(registry.path), "--no-progress"]
    client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: count_lines(parts) >= 4000, 240, "4000 results")
    seen_by_victim = received(endpoints[0])
    os.kill(pilots[0].server_pid, signal.SIGKILL)  # type: ignore[arg-type]
    wait_until(lambda: count_lines(parts) >= 9000, 240, "9000 results")
    client.kill()
    client.wait()
    in_flight = 3 * 48  # one shard keeps the endpoints' total capacity in flight
    done_before_restart = count_lines(parts)
    assert done_before_restart < total
    finish = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["custom_id"] for r in lines] == [f"req-{i}" for i in range(total)]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in lines)
    assert all(f"item {i}" in r["response"]["body"]["choices"][0]["message"]["content"]
               for i, r in enumerate(lines))
    sent = seen_by_victim + sum(received(e) for e in endpoints[1:])
    # Only requests in flight at the two kills may have been sent twice.
    assert total <= sent <= total + 2 * in_flight, sent


@pytest.mark.slow
def test_judge_resumes_after_client_kill_exactly_once(fleet: StubFleet, registry: Registry,
                                                      tmp_path: Path) -> None:
    fleet.start_ready(2, "m1", capacity=16, latency=0.01)
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    with open(source, "w") as handle:
        for i in range(2000):
            handle.write(json.dumps({"id": f"q{i}", "question": f"{i}?",
                                     "answers": ["a", "b", "c"]}) + "\n")
    command = [*NERSCHAT, "judge", str(source), "-o", str(output), "--registry",
               str(registry.path), "--shuffle", "--seed", "3", "--no-progress"]
    parts = output.with_name(output.name + ".parts")
    client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: count_lines(parts) >= 500, 120, "500 judged items")
    client.send_signal(signal.SIGKILL)
    client.wait()
    finish = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finish.returncode == 0, finish.stderr
    assert "already done (resumed)" in finish.stderr
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["id"] for r in lines] == [f"q{i}" for i in range(2000)]
    for r in lines:
        assert r["error"] is None
        assert r["answer"] == ["a", "b", "c"][r["index"]]
        assert sorted(r["order"]) == [0, 1, 2]


def test_judge_bad_input_loses_nothing(fleet: StubFleet, registry: Registry,
                                       tmp_path: Path) -> None:
    fleet.start_ready(1, "m1")
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    good = [json.dumps({"id": f"q{i}", "question": "?", "answers": ["x", "y"]}) for i in range(5)]
    source.write_text("\n".join(good) + "\n")
    base = [*NERSCHAT, "judge", str(source), "-o", str(output), "--registry",
            str(registry.path), "--no-progress"]
    assert subprocess.run(base, capture_output=True, timeout=120).returncode == 0
    source.write_text("\n".join([*good, '{"id": "q9", "question": "?", "answers": []}']) + "\n")
    result = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    error = result.stderr.strip()
    assert f"{source}:6: field 'answers': empty candidate list" in error.replace("\n", "")
    assert len(output.read_text().splitlines()) == 5  # the earlier results are still there
    skipped = subprocess.run([*base, "--skip-invalid"], capture_output=True, text=True,
                             timeout=120)
    assert skipped.returncode == 0, skipped.stderr
    assert "1 invalid line(s) skipped" in skipped.stderr
    errors = tmp_path / "judged.errors.jsonl"
    assert json.loads(errors.read_text())["line"] == 6


def test_judge_both_orders_and_unknown_choice(fleet: StubFleet, registry: Registry,
                                              tmp_path: Path) -> None:
    fleet.start_ready(1, "m1")
    source, output = tmp_path / "pairs.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps({"id": f"p{i}", "question": f"pair {i}",
                                          "answers": ["left", "right"], "reference": 0}) + "\n"
                              for i in range(20)))
    result = subprocess.run([*NERSCHAT, "judge", str(source), "-o", str(output), "--registry",
                             str(registry.path), "--both-orders", "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert all(len(r["verdicts"]) == 2 and isinstance(r["agreement"], bool) for r in lines)
    assert all((r["index"] is None) != r["agreement"] for r in lines)
    assert all(r["correct"] == (r["index"] == 0) for r in lines)
    assert "both orders agree" in result.stderr and "matches reference" in result.stderr


def test_run_batch_mixes_models_and_keeps_error_lines(fleet: StubFleet, registry: Registry,
                                                     tmp_path: Path) -> None:
    fleet.start_ready(1, "chat")
    fleet.start_ready(1, "emb", kind="embedding")
    source, output = tmp_path / "batch.jsonl", tmp_path / "out.jsonl"
    lines = [
        {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}},
        {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "emb", "input": ["x", "y"]}},
        {"custom_id": "bad", "method": "POST", "url": "/v1/completions",
         "body": {"model": "chat", "prompt": 42}},
    ]
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    result = subprocess.run([*NERSCHAT, "run-batch", "-i", str(source), "-o", str(output),
                             "--registry", str(registry.path), "--no-progress"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = {r["custom_id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert out["c"]["response"]["status_code"] == 200 and out["c"]["error"] is None
    assert out["c"]["id"].startswith("vllm-")
    assert len(out["e"]["response"]["body"]["data"]) == 2
    assert out["bad"]["response"]["status_code"] == 400 and "prompt" in out["bad"]["error"]


@pytest.mark.slow
@pytest.mark.parametrize("api", ["openai", "tei"])
def test_embed_kill_and_resume_gives_identical_output(fleet: StubFleet, registry: Registry,
                                                      tmp_path: Path, api: str) -> None:
    fleet.start_ready(2, "e1", kind="embedding", latency=0.02, api=api,
                      max_input_length=40, max_model_len=40)
    source = tmp_path / "corpus.jsonl"
    with open(source, "w") as handle:
        for i in range(3000):
            words = "long " * (60 if i % 500 == 7 else 5)  # a few over the 40-token limit
            handle.write(json.dumps({"id": f"d{i}", "text": f"document {i} {words}"}) + "\n")
    reference, resumed = tmp_path / "ref", tmp_path / "resumed"
    base = [*NERSCHAT, "embed", str(source), "--registry", str(registry.path), "--shards", "6",
            "--no-progress"]
    done = subprocess.run([*base, "-o", str(reference)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    client = subprocess.Popen([*base, "-o", str(resumed)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_until(lambda: (resumed / "shard-00001.json").exists(), 120, "two finished shards")
    client.kill()
    client.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in resumed.glob("shard-*.npy")}
    rerun = subprocess.run([*base, "-o", str(resumed)], capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    for name, mtime in finished.items():
        assert (resumed / name).stat().st_mtime_ns == mtime, f"{name} was recomputed"
    ref_manifest = json.loads((reference / "manifest.json").read_text())
    new_manifest = json.loads((resumed / "manifest.json").read_text())
    assert new_manifest["shards"] == ref_manifest["shards"]  # same files, same checksums
    assert new_manifest["truncated"] == ref_manifest["truncated"] == 6
    a, b = nerschat.load_embeddings(reference), nerschat.load_embeddings(resumed, mmap=True)
    assert a.ids == b.ids == [f"d{i}" for i in range(3000)]
    assert np.array_equal(a.vectors, b.vectors) and a.vectors.dtype == np.float32
    assert new_manifest["normalized"] is True and new_manifest["dimension"] == 384


def test_embed_prompt_name_needs_tei_and_no_truncate_records_errors(
        fleet: StubFleet, registry: Registry, tmp_path: Path) -> None:
    fleet.start_ready(1, "e1", kind="embedding", max_model_len=10)
    source = tmp_path / "c.jsonl"
    source.write_text(json.dumps({"id": "short", "text": "a b c"}) + "\n"
                      + json.dumps({"id": "long", "text": "w " * 50}) + "\n")
    base = [*NERSCHAT, "embed", str(source), "--registry", str(registry.path), "--no-progress"]
    result = subprocess.run([*base, "-o", str(tmp_path / "a"), "--prompt-name", "query"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "use --prefix" in result.stderr
    result = subprocess.run([*base, "-o", str(tmp_path / "b"), "--no-truncate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert list(manifest["errors"]) == ["long"]
    vectors = nerschat.load_embeddings(tmp_path / "b").vectors
    assert np.isnan(vectors[1]).all() and not np.isnan(vectors[0]).any()
