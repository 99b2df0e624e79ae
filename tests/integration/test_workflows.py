"""Judge, run-batch and embed over stub replicas: resumability, exactly-once, bad input."""

from __future__ import annotations

import json
import os
import re
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


def held(endpoint: nerschat.Endpoint) -> int:
    """Requests a stub has received and not answered yet."""
    counters = server_counters(endpoint)
    return int(counters["nerschat_stub_requests_received_total"]
               - counters["nerschat_stub_requests_served_total"])


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
    total, in_flight = 20_000, 144
    pilots = [fleet.start("m1", capacity=48, latency=0.005) for _ in range(3)]
    endpoints = [fleet.wait_ready(p) for p in pilots]
    source, output = tmp_path / "batch.jsonl", tmp_path / "out.jsonl"
    write_batch(source, total)
    parts = output.with_name(output.name + ".parts")
    # A fixed number in flight makes the bound below exact. The adaptive default keeps about
    # twice what the servers run at once, and more while the client is the bottleneck (as
    # here, at 5 ms per request), so it has no fixed bound; its runs are checked for
    # exactly-once answers by the other kill tests.
    command = [*NERSCHAT, "run-batch", "-i", str(source), "-o", str(output), "--registry",
               str(registry.path), "--no-progress", "--in-flight", str(in_flight)]
    client = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until(lambda: count_lines(parts) >= 4000, 240, "4000 results")
    seen_by_victim = received(endpoints[0])
    os.kill(pilots[0].server_pid, signal.SIGKILL)  # type: ignore[arg-type]
    wait_until(lambda: count_lines(parts) >= 9000, 240, "9000 results")
    client.kill()
    client.wait()
    survivors = endpoints[1:]
    # What the servers still held when the client died finishes without being recorded.
    wait_until(lambda: all(held(e) == 0 for e in survivors), 30,
               "the survivors to finish what they held")
    before_restart = sum(received(e) for e in survivors)
    done_before_restart = count_lines(parts)
    assert done_before_restart < total
    finish = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["custom_id"] for r in lines] == [f"req-{i}" for i in range(total)]
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in lines)
    assert all(f"item {i}" in r["response"]["body"]["choices"][0]["message"]["content"]
               for i, r in enumerate(lines))
    # The rerun sends each item without a recorded result once, and nothing recorded again.
    assert sum(received(e) for e in survivors) - before_restart == total - done_before_restart
    sent = seen_by_victim + sum(received(e) for e in survivors)
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
    wait_until(lambda: count_lines(resumed / ".work") >= 600, 120, "600 embedded documents")
    client.kill()
    client.wait()
    rerun = subprocess.run([*base, "-o", str(resumed)], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "COLUMNS": "200"})  # rows unwrapped
    assert rerun.returncode == 0, rerun.stderr
    summary = re.search(r"3000 \((\d+) embedded this run, (\d+) already done\)",
                        rerun.stdout + rerun.stderr)
    assert summary, rerun.stdout + rerun.stderr
    assert int(summary[2]) >= 600 and int(summary[1]) + int(summary[2]) == 3000
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


# -- field cases: each class of fault, with the right value asserted -------------------------

def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NERSCHAT, *args], capture_output=True, text=True, timeout=timeout)


def judge_lines(path: Path, count: int, **extra: object) -> None:
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": f"q{i}?",
                                        "answers": ["yes", "no"], **extra}) + "\n"
                            for i in range(count)))


def test_changed_configuration_is_refused_and_edited_lines_are_redone(
        fleet: StubFleet, registry: Registry, tmp_path: Path) -> None:
    fleet.start_ready(1, "m1")
    fleet.start_ready(1, "m2")
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    judge_lines(source, 5)
    reg = ["--registry", str(registry.path), "--no-progress"]
    first = run_cli("judge", str(source), "-o", str(output), "--model", "m1", *reg)
    assert first.returncode == 0, first.stderr
    before = output.read_text()
    changed = run_cli("judge", str(source), "-o", str(output), "--model", "m2", "--both-orders",
                      *reg)
    assert changed.returncode == 2
    assert 'model "m1" -> "m2"' in changed.stderr and "--restart" in changed.stderr
    assert output.read_text() == before
    fresh = run_cli("judge", str(source), "-o", str(output), "--model", "m2", "--both-orders",
                    "--restart", *reg)
    assert fresh.returncode == 0, fresh.stderr
    assert "stub-m1" not in output.read_text()
    assert all("verdicts" in json.loads(x) for x in output.read_text().splitlines())

    batch, results = tmp_path / "batch.jsonl", tmp_path / "results.jsonl"
    write_batch(batch, 6, model="m1")
    assert run_cli("run-batch", "-i", str(batch), "-o", str(results), *reg).returncode == 0
    lines = batch.read_text().splitlines()
    lines[2] = lines[2].replace('"model": "m1"', '"model": "m2"')
    batch.write_text("\n".join(lines) + "\n")
    again = run_cli("run-batch", "-i", str(batch), "-o", str(results), *reg)
    assert again.returncode == 0, again.stderr
    models = [json.loads(x)["response"]["body"]["model"] for x in results.read_text().splitlines()]
    assert models == ["m1", "m1", "m2", "m1", "m1", "m1"]
    assert "processed this run" in again.stderr and "already done (resumed)" in again.stderr


def test_lone_surrogates_are_reported_per_line(fleet: StubFleet, registry: Registry,
                                               tmp_path: Path) -> None:
    fleet.start_ready(1, "m1")
    fleet.start_ready(1, "emb", kind="embedding", api="tei")
    reg = ["--registry", str(registry.path), "--no-progress"]
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "question": "fine", "answers": ["x", "y"]}\n'
                     '{"id": "b", "question": "half \\ud83d emoji", "answers": ["x", "y"]}\n')
    refused = run_cli("judge", str(items), "-o", str(tmp_path / "j.jsonl"), *reg)
    assert refused.returncode == 2
    assert f"{items}:2: field 'question': lone surrogate" in refused.stderr.replace("\n", "")
    skipped = run_cli("judge", str(items), "-o", str(tmp_path / "j.jsonl"), "--skip-invalid",
                      *reg)
    assert skipped.returncode == 0, skipped.stderr
    assert len((tmp_path / "j.jsonl").read_text().splitlines()) == 1
    assert json.loads((tmp_path / "j.errors.jsonl").read_text())["line"] == 2

    batch = tmp_path / "batch.jsonl"
    write_batch(batch, 3)
    batch.write_text(batch.read_text() + json.dumps({
        "custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m1", "messages": [{"role": "user", "content": "x\udc00"}]}}) + "\n")
    done = run_cli("run-batch", "-i", str(batch), "-o", str(tmp_path / "b.jsonl"),
                   "--skip-invalid", *reg)
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "b.jsonl").read_text().splitlines()) == 3
    assert "body.messages[0].content" in (tmp_path / "b.errors.jsonl").read_text()

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "d1", "text": "fine"}\n{"id": "d2", "text": "bad \\udc00"}\n')
    embedded = run_cli("embed", str(corpus), "-o", str(tmp_path / "e"), "--skip-invalid", *reg)
    assert embedded.returncode == 0, embedded.stderr
    assert nerschat.load_embeddings(tmp_path / "e").ids == ["d1"]
    assert "GPU-hours used" in embedded.stderr and "job hours" in embedded.stderr


@pytest.mark.parametrize("status", [500, 429])
def test_a_run_where_every_item_failed_exits_non_zero(fleet: StubFleet, registry: Registry,
                                                      tmp_path: Path, status: int) -> None:
    endpoint = fleet.start_ready(1, "m", error_every=1, error_status=status)[0]
    source, output = tmp_path / "items.jsonl", tmp_path / "out.jsonl"
    judge_lines(source, 3)
    result = run_cli("judge", str(source), "-o", str(output), "--registry", str(registry.path),
                     "--no-progress", "--reasoning-tokens", "0")
    assert result.returncode == 1
    assert "all 3 items failed" in result.stderr and "Traceback" not in result.stderr
    assert all(json.loads(x)["error"] for x in output.read_text().splitlines())
    assert received(endpoint) <= 3 * 3 * 3  # judge attempts x fail-over tries, no SDK retries on top


def test_judge_survives_a_replica_answering_garbage(fleet: StubFleet, registry: Registry,
                                                    tmp_path: Path) -> None:
    import http.server
    import threading
    import time

    fleet.start_ready(1, "m")

    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.end_headers()

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = b'{"id": "x", "choices": [ {not json'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    entry = {"schema": 1, "id": "bad-replica", "kind": "llm", "engine": "vllm", "model": "m",
             "url": f"http://127.0.0.1:{server.server_address[1]}/v1", "state": "ready",
             "api_key": None, "pid": os.getpid(), "host": "127.0.0.1", "slurm_job_id": None,
             "heartbeat_at": time.time() + 3600, "ttl": 3600.0}
    (registry.path / "bad-replica.json").write_text(json.dumps(entry))
    try:
        source, output = tmp_path / "items.jsonl", tmp_path / "out.jsonl"
        judge_lines(source, 40)
        result = run_cli("judge", str(source), "-o", str(output), "--registry",
                         str(registry.path), "--no-progress", "--reasoning-tokens", "0")
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert len(output.read_text().splitlines()) == 40
    finally:
        server.shutdown()
        (registry.path / "bad-replica.json").unlink(missing_ok=True)


def test_embed_oversized_and_rejected_documents_do_not_stop_the_run(
        fleet: StubFleet, registry: Registry, tmp_path: Path) -> None:
    fleet.start_ready(1, "emb", kind="embedding", api="tei")
    reg = ["--registry", str(registry.path), "--no-progress"]
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(5):
        (docs / f"note{i}.txt").write_text(f"note {i} " * 50)
    (docs / "big-book.txt").write_text("alpha beta gamma " * 150_000)  # ~2.5 MB
    done = run_cli("embed", str(docs), "-o", str(tmp_path / "out"), *reg)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["count"] == 6 and manifest["truncated"] == 1 and not manifest["errors"]

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(json.dumps({"id": "long-1", "text": "word " * 700}) + "\n" + "".join(
        json.dumps({"id": f"d{i}", "text": f"short doc {i}"}) + "\n" for i in range(5)))
    rejected = run_cli("embed", str(corpus), "-o", str(tmp_path / "out2"), "--no-truncate",
                       "--batch-size", "1", *reg)
    assert rejected.returncode == 0, rejected.stderr
    ids, vectors = nerschat.load_embeddings(tmp_path / "out2")
    manifest = json.loads((tmp_path / "out2" / "manifest.json").read_text())
    assert list(manifest["errors"]) == ["long-1"] and ids[0] == "long-1"
    assert np.isnan(vectors[0]).all() and not np.isnan(vectors[1:]).any()


def test_judge_budgets_reasoning_to_the_context(fleet: StubFleet, registry: Registry,
                                                tmp_path: Path) -> None:
    fleet.start_ready(1, "m", max_model_len=400, check_context=1)
    source, output = tmp_path / "items.jsonl", tmp_path / "out.jsonl"
    source.write_text(
        json.dumps({"id": "near-limit", "question": "a " * 320, "answers": ["x", "y"]}) + "\n"
        + json.dumps({"id": "over-limit", "question": "a " * 500, "answers": ["x", "y"]}) + "\n"
        + json.dumps({"id": "small", "question": "q", "answers": ["x", "y"]}) + "\n")
    result = run_cli("judge", str(source), "-o", str(output), "--registry", str(registry.path),
                     "--no-progress")
    assert result.returncode == 0, result.stderr
    lines = {r["id"]: r for r in map(json.loads, output.read_text().splitlines())}
    assert lines["near-limit"]["error"] is None
    assert lines["small"]["error"] is None and lines["small"]["reasoning"]
    assert "prompt too long for the model's context (max_model_len 400)" in \
        lines["over-limit"]["error"]


RSS_SCRIPT = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_run_batch_memory_follows_work_in_flight_not_input_size(
        fleet: StubFleet, registry: Registry, tmp_path: Path) -> None:
    fleet.start_ready(1, "emb", kind="embedding", max_model_len=100_000, dim=256, capacity=16)
    filler = "test " * 24_000  # ~120 kB per request

    def peak(count: int) -> int:
        source = tmp_path / f"batch{count}.jsonl"
        with open(source, "w") as handle:
            for i in range(count):
                handle.write(json.dumps({"custom_id": f"e{i}", "method": "POST",
                                         "url": "/v1/embeddings",
                                         "body": {"model": "emb", "input": filler + str(i)}})
                             + "\n")
        out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, *NERSCHAT, "run-batch", "-i",
                              str(source), "-o", str(tmp_path / f"out{count}.jsonl"),
                              "--registry", str(registry.path), "--no-progress"],
                             capture_output=True, text=True, timeout=600, check=True)
        return int(out.stdout.split()[-1])

    size_kb = 400 * len(filler) // 1024
    extra = peak(400) - peak(10)
    assert extra < size_kb / 2, f"peak RSS grew {extra} kB for a {size_kb} kB input"


def test_endpoints_advertise_what_clients_need(fleet: StubFleet) -> None:
    tei = fleet.start_ready(1, "emb", kind="embedding", api="tei", max_client_batch_size=16,
                            max_input_length=128)[0]
    llm = fleet.start_ready(1, "m", max_model_len=1024)[0]
    assert (tei.api, tei.max_batch_size, tei.max_input_tokens) == ("tei", 16, 128)
    assert tei.metrics_url == tei.url.removesuffix("/v1") + "/metrics"
    assert (llm.api, llm.max_model_len) == ("openai", 1024)


def test_embed_batches_follow_each_endpoints_own_limits(fleet: StubFleet, registry: Registry,
                                                        tmp_path: Path) -> None:
    big = fleet.start_ready(1, "emb", kind="embedding", api="tei", max_client_batch_size=32,
                            latency=0.01)[0]
    small = fleet.start_ready(1, "emb", kind="embedding", api="tei", max_client_batch_size=4,
                              latency=0.01)[0]
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{i}", "text": "word"}) + "\n"
                              for i in range(2000)))
    done = run_cli("embed", str(corpus), "-o", str(tmp_path / "out"), "--registry",
                   str(registry.path), "--no-progress")
    assert done.returncode == 0, done.stderr
    counters = {e.id: server_counters(e) for e in (big, small)}
    texts = {i: int(c["vllm:prompt_tokens_total"]) for i, c in counters.items()}
    served = {i: int(c["nerschat_stub_requests_served_total"]) for i, c in counters.items()}
    received = {i: int(c["nerschat_stub_requests_received_total"]) for i, c in counters.items()}
    assert received == served, "a batch was rejected: sized to another endpoint's limits"
    assert sum(texts.values()) == 2000 and served[small.id] > 0
    assert texts[big.id] / served[big.id] > 4  # not cut to the smallest replica's limit
    assert texts[small.id] / served[small.id] <= 4
