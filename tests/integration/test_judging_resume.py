"""Rerunning `nerschat judge` (every mode) and `run-batch` with identical settings resumes.

Each configuration is kept in OUT.parts/config.json; the rerun compares its own with it. A
setting whose Python form is not its JSON form (the score scale, a tuple) once made every
score run refuse to resume ("scale [1, 10] -> [1, 10]"). The rerun must exit 0 and send
nothing: the stub's request counter does not move, the output is unchanged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters

MODES: list[tuple[str, list[str]]] = [
    ("best-of", ["--both-orders", "--shuffle", "--seed", "3"]),
    ("pairwise", ["--field", "answer_a=left", "--temperature", "0.5"]),
    ("score", ["--scale", "0-4", "--reference"]),
    ("score", []),  # the default scale, 1-10
    ("classify", ["--labels", "safe=harmless;unsafe=harmful;unsure", "--group-field", "team"]),
]


def record(mode: str, i: int) -> dict[str, Any]:
    line: dict[str, Any] = {"id": f"{mode}-{i}", "question": f"What is {i} + {i}?"}
    if mode == "best-of":
        line["answers"] = [str(2 * i), str(i)]
    elif mode == "pairwise":
        line.update(left=str(2 * i), answer_b=str(i), model_a="x", model_b="y")
    else:
        line.update(answer=str(2 * i), reference=str(2 * i), team="t")
    return line


def nerschat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nerschat.cli.main", *args],
                          capture_output=True, text=True, timeout=120)


def received(counters: dict[str, float]) -> float:
    return counters["nerschat_stub_requests_received_total"]


def test_identical_rerun_of_every_mode_resumes(fleet: StubFleet, registry: Registry,
                                               tmp_path: Path) -> None:
    endpoint = fleet.start_ready(1, "m", capacity=16)[0]
    for n, (mode, options) in enumerate(MODES):
        source = tmp_path / f"{n}.jsonl"
        source.write_text("".join(json.dumps(record(mode, i)) + "\n" for i in range(6)))
        output = tmp_path / f"{n}.out"
        argv = ["judge", str(source), "-o", str(output), "--mode", mode, *options,
                "--reasoning-tokens", "4", "--registry", str(registry.path), "--no-progress"]
        first = nerschat(*argv)
        assert first.returncode == 0, f"{mode} {options}: {first.stderr[-800:]}"
        written = output.read_text()
        assert len(written.splitlines()) == 6
        assert all(json.loads(line)["error"] is None for line in written.splitlines())
        before = received(server_counters(endpoint))
        again = nerschat(*argv)
        assert again.returncode == 0, f"{mode} {options} did not resume: {again.stderr[-800:]}"
        assert "another configuration" not in again.stderr
        assert received(server_counters(endpoint)) == before, f"{mode} {options}: work redone"
        assert output.read_text() == written
        # and a changed setting is still refused
        changed = nerschat(*argv, "--temperature", "0.75")
        assert changed.returncode == 2 and "another configuration (temperature" in changed.stderr

    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}],
                 "max_tokens": 4}}) + "\n" for i in range(4)))
    argv = ["run-batch", "-i", str(batch), "-o", str(tmp_path / "batch.out"), "--registry",
            str(registry.path), "--no-progress"]
    assert nerschat(*argv).returncode == 0
    before = received(server_counters(endpoint))
    again = nerschat(*argv)
    assert again.returncode == 0, again.stderr[-800:]
    assert received(server_counters(endpoint)) == before
