"""A draining pilot stops taking new requests at once but lets the ones in flight finish.

Field case `walltime-drain-kills-inflight`: a drain ahead of the walltime (and on SIGTERM or
`nerschat stop`) used to wait one second and SIGTERM the server, cutting long generations.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import openai
import pytest

from nerschat.pilot.pilot import Pilot, PilotConfig
from nerschat.registry import Endpoint, Registry
from nerschat.testing.fleet import StubFleet, server_counters, wait_until

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]
PROMPT = " ".join(f"w{i}" for i in range(12))  # the stub answers with 15 words
WORDS = 15


@dataclass
class Outcome:
    pieces: int = 0
    error: str | None = None
    done: bool = False


def stream(entry: Endpoint, outcome: Outcome) -> None:
    """One streamed chat answer, straight to the server (no fail-over to hide a cut)."""
    client = openai.OpenAI(base_url=entry.url, api_key=entry.api_key, max_retries=0, timeout=60)
    try:
        for chunk in client.chat.completions.create(
                model=entry.model, stream=True, messages=[{"role": "user", "content": PROMPT}]):
            if chunk.choices and chunk.choices[0].delta.content:
                outcome.pieces += 1
        outcome.done = True
    except Exception as exc:  # noqa: BLE001 - the test reports whatever cut the stream
        outcome.error = type(exc).__name__


def ask(entry: Endpoint, outcome: Outcome) -> None:
    """One non-streamed chat answer, straight to the server."""
    client = openai.OpenAI(base_url=entry.url, api_key=entry.api_key, max_retries=0, timeout=60)
    try:
        reply = client.chat.completions.create(
            model=entry.model, messages=[{"role": "user", "content": PROMPT}])
        outcome.pieces = len((reply.choices[0].message.content or "").split())
        outcome.done = True
    except Exception as exc:  # noqa: BLE001 - the test reports whatever cut the request
        outcome.error = type(exc).__name__


def start_streams(entry: Endpoint, count: int,
                  plain: int = 0) -> tuple[list[Outcome], list[threading.Thread]]:
    """`count` streamed and `plain` non-streamed requests, running on the server."""
    outcomes = [Outcome() for _ in range(count + plain)]
    threads = [threading.Thread(target=stream if i < count else ask, args=(entry, o),
                                daemon=True) for i, o in enumerate(outcomes)]
    for thread in threads:
        thread.start()
    wait_until(lambda: server_counters(entry)["vllm:num_requests_running"] >= count + plain, 15,
               "the streams to be running")
    return outcomes, threads


def finished(outcomes: list[Outcome], threads: list[threading.Thread]) -> int:
    for thread in threads:
        thread.join(60)
    return sum(o.done and o.pieces == WORDS for o in outcomes)


def test_sigterm_and_stop_let_streams_in_flight_finish(fleet: StubFleet,
                                                       registry: Registry) -> None:
    pilots = [fleet.start(f"m{i}", chunk_delay=1.0, extra=("--grace-period", "60"))
              for i in (1, 2)]
    entries = [fleet.wait_ready(p) for p in pilots]
    running = [start_streams(entry, 3) for entry in entries]  # each needs ~15 s
    pilots[0].process.send_signal(signal.SIGTERM)
    subprocess.run([*NERSCHAT, "stop", entries[1].id, "--no-wait", "--registry",
                    str(registry.path)], check=True, capture_output=True, timeout=30)
    for entry in entries:  # draining at once: clients stop sending new requests
        wait_until(lambda e=entry: (c := registry.get(e.id)) is not None
                   and c.state == "draining", 5, "the entry to be draining")
    assert registry.endpoints() == []
    aborted = [3 - finished(*r) for r in running]
    assert aborted == [0, 0], [o for r in running for o in r[0]]
    assert [p.process.wait(30) for p in pilots] == [0, 0]
    assert registry.scan().entries == []


def test_drain_budget_bounds_the_wait(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("m1", chunk_delay=2.0, extra=("--grace-period", "1"))  # ~30 s answer
    entry = fleet.wait_ready(pilot)
    outcomes, threads = start_streams(entry, 1)
    pilot.process.send_signal(signal.SIGTERM)
    assert pilot.process.wait(30) == 0
    assert finished(outcomes, threads) == 0  # cut at the budget, not waited for


def test_walltime_drain_keeps_requests_in_flight(registry: Registry) -> None:
    """Streams and non-streamed requests in flight when the walltime drain starts finish."""
    config = PilotConfig(engine="stub", model="m1", options={"chunk_delay": 0.4, "latency": 3},
                         ttl=60,
                         drain_before=60.0, grace_period=0.0)  # the walltime has its own budget
    pilot = Pilot(config, registry)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(pilot.run()), daemon=True)
    runner.start()
    wait_until(lambda: registry.endpoints("m1") != [], 30, "the pilot to be ready")
    (entry,) = registry.endpoints("m1")
    outcomes, threads = start_streams(entry, 3, plain=3)  # each needs 3 s or more
    assert pilot.endpoint is not None
    # The job's end comes within drain_before (as after `scontrol update TimeLimit=...`),
    # ~40 s of it left for the drain; the heartbeat is 20 s apart, the walltime is checked
    # every second.
    pilot.endpoint.expires_at = time.time() + 59.5
    wait_until(lambda: (e := registry.get(entry.id)) is not None and e.state == "draining", 5,
               "the walltime drain to start")
    assert pilot.stop.walltime
    assert finished(outcomes, threads) == 6
    runner.join(60)
    assert codes == [0] and registry.scan().entries == []


def test_walltime_from_squeue_in_a_slurm_job(fleet: StubFleet, registry: Registry,
                                             tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The field case through the CLI: the end time comes from `squeue` for SLURM_JOB_ID,
    the drain starts `--drain-before` ahead of it, and streams already running finish."""
    end = datetime.now() + timedelta(seconds=75)
    squeue = tmp_path / "bin" / "squeue"
    squeue.parent.mkdir()
    squeue.write_text(f"#!/bin/sh\necho {end.strftime('%Y-%m-%dT%H:%M:%S')}\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{squeue.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    pilot = fleet.start("m1", chunk_delay=1.0, extra=("--drain-before", "60", "-v"))
    entry = fleet.wait_ready(pilot)
    assert entry.slurm_job_id == "4242" and entry.expires_at is not None
    outcomes, threads = start_streams(entry, 2)  # ~15 s each; the drain starts at ~15 s
    wait_until(lambda: (e := registry.get(entry.id)) is not None and e.state == "draining",
               30, "the walltime drain")
    assert any(not o.done for o in outcomes)  # still running when the drain began
    assert finished(outcomes, threads) == 2
    assert pilot.process.wait(30) == 0
    assert "walltime ends in" in pilot.log.read_text()
