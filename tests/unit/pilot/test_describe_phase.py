"""A registry entry's phase in words, as `nerschat ls` and `nerschat wait` show it."""

from __future__ import annotations

import os
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest

from nerschat import slurm
from nerschat.client.readiness import describe_status
from nerschat.pilot.describe import describe_phase
from nerschat.registry import Registry
from nerschat.slurm import QueuedJob
from tests.conftest import make_endpoint

NOW = time.time()


def pending(job: str | None = "4242") -> object:
    return make_endpoint(id="m.abc.0-0", state="pending", url="", pid=0, slurm_job_id=job,
                         ttl=3600.0, heartbeat_at=NOW, started_at=NOW)


def test_pending_names_the_job_the_reason_and_the_expected_start() -> None:
    start = NOW + 25 * 60
    queue = {"4242": QueuedJob("4242", "PENDING", "Resources", start, "me", "nerschat.m.1")}
    when = datetime.fromtimestamp(start).strftime("%Y-%m-%d %H:%M")
    assert describe_phase(pending(), NOW, queue) == (  # type: ignore[arg-type]
        f"job 4242 pending: waiting for nodes to become free (Resources), expected start "
        f"{when} (in 25m)")
    queue = {"4242": QueuedJob("4242", "PENDING", "Priority", None)}
    assert describe_phase(pending(), NOW, queue) == (  # type: ignore[arg-type]
        "job 4242 pending: waiting behind higher-priority jobs (Priority)")


def test_pending_when_the_job_is_gone_running_or_slurm_cannot_say() -> None:
    entry = pending()
    assert "job 4242 left the queue without starting its pilot" in describe_phase(
        entry, NOW, {})  # type: ignore[arg-type]
    assert describe_phase(entry, NOW, None) == "job 4242 queued (not started yet)"  # type: ignore[arg-type]
    running = {"4242": QueuedJob("4242", "RUNNING", "None", None, nodes="nid001")}
    assert describe_phase(entry, NOW, running) == (  # type: ignore[arg-type]
        "job 4242 running on nid001, pilot not started yet")


def test_starting_gives_node_seconds_and_the_last_log_line() -> None:
    entry = make_endpoint(state="starting", host="nid001234", started_at=NOW - 42)
    assert describe_phase(entry, NOW, log_line="Loading safetensors 3/4") == (
        "for 42 s on nid001234: Loading safetensors 3/4")
    assert describe_phase(make_endpoint(state="ready"), NOW) == ""


def test_wait_status_names_the_queued_job_even_without_squeue(registry: Registry) -> None:
    registry.publish(pending())  # type: ignore[arg-type]
    assert describe_status(registry, "m1") == (
        "model 'm1': pilot job 4242 queued, not started yet (see 'nerschat ls')")


def test_wait_status_of_a_starting_pilot_shows_its_log(registry: Registry) -> None:
    registry.publish(make_endpoint(id="s1", state="starting", host="nid7",
                                   started_at=time.time() - 5))
    log = registry.log_dir / "s1.log"
    log.write_text("INFO starting\nINFO Loading weights \x1b[1mnow\x1b[0m\n")
    log.chmod(0o600)
    status = describe_status(registry, "m1")
    assert status.startswith("model 'm1': 1 endpoint(s) starting, the oldest for ")
    assert status.endswith(" s on nid7: INFO Loading weights \\x1b[1mnow\\x1b[0m")


def fake_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_queued_jobs_parses_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_squeue(tmp_path, monkeypatch,
                "4242|PENDING|2026-12-01T10:00:00|me|nerschat.m.1|(null)|Resources\\n"
                "4243|RUNNING|2026-11-29T09:00:00|me|nerschat.m.2|nid001|None\\n")
    jobs = slurm.queued_jobs(["4242", "4243", "$(rm -rf ~)"])
    assert jobs is not None and set(jobs) == {"4242", "4243"}
    assert (jobs["4242"].reason, jobs["4242"].expected_start) == (
        "Resources", datetime(2026, 12, 1, 10).timestamp())
    assert jobs["4243"].nodes == "nid001"


def test_pending_jobs_carry_the_expected_start(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    fake_squeue(tmp_path, monkeypatch, "4242 nerschat.m.1 Resources|2026-12-01T10:00:00\\n"
                                       "4243 other Priority|N/A\\n")
    first, second = slurm.pending_jobs()
    assert (first.reason, first.expected_start) == ("Resources",
                                                    datetime(2026, 12, 1, 10).timestamp())
    assert "expected start 2026-12-01 10:00" in first.describe()
    assert (second.reason, second.expected_start) == ("Priority", None)
