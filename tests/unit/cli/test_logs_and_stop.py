"""`nerschat logs`, `ls` phases and `stop` (drain, then scancel) against a fake SLURM:
`squeue` prints the lines of a queue file, `scancel` empties it and records its call."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nerschat.registry import Registry
from tests.conftest import make_endpoint

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


@pytest.fixture
def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fake queue: one `squeue --format=%i|%T|%S|%u|%j|%N|%r` line per job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    state = tmp_path / "queue"
    state.write_text("")
    calls = tmp_path / "calls"
    (bin_dir / "squeue").write_text(f'#!/bin/sh\necho "squeue $*" >> {calls}\ncat {state}\n')
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "scancel $*" >> {calls}\n: > {state}\n')
    for name in ("squeue", "scancel"):
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return state


def job_line(job: str, state: str = "PENDING", user: str | None = None,
             reason: str = "Resources") -> str:
    return (f"{job}|{state}|2026-12-01T10:00:00|{user or getpass.getuser()}|nerschat.m.1|"
            f"{'nid001' if state == 'RUNNING' else '(null)'}|{reason}\n")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NERSCHAT, *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def publish_pending(registry: Registry, endpoint_id: str, job: str) -> None:
    registry.publish(make_endpoint(id=endpoint_id, state="pending", url="", pid=0,
                                   slurm_job_id=job, ttl=3600.0))


def test_logs_of_a_queued_pilot_say_it_has_not_started(registry: Registry, queue: Path) -> None:
    publish_pending(registry, "m.a.0-0", "4242")
    queue.write_text(job_line("4242"))
    result = cli("logs", "m.a.0-0", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert "m.a.0-0 has not started, so it has no server log yet: job 4242 pending: waiting " \
           "for nodes to become free (Resources), expected start 2026-12-01 10:00" in \
           " ".join(result.stderr.split())
    assert result.stdout == ""


def test_logs_print_the_tail_escaped(registry: Registry) -> None:
    registry.publish(make_endpoint(id="p1", state="starting"))
    log = registry.log_dir / "p1.log"
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(100)) + b"\x1b]0;owned\x07bye\n")
    log.chmod(0o600)
    result = cli("logs", "p1", "-n", "2", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line 99\n\\x1b]0;owned\\x07bye\n"
    missing = cli("logs", "nope", "--registry", str(registry.path))
    assert missing.returncode == 1 and "no endpoint nope and no log" in missing.stderr
    bad = cli("logs", "../registry/p1", "--registry", str(registry.path))
    assert bad.returncode == 2 and "not an endpoint id" in bad.stderr


def test_logs_follow_until_the_pilot_ends(registry: Registry) -> None:
    registry.publish(make_endpoint(id="p1", state="starting"))
    log = registry.log_dir / "p1.log"
    log.write_text("first\n")
    log.chmod(0o600)
    follower = subprocess.Popen([*NERSCHAT, "logs", "p1", "-f", "--poll", "0.1", "--registry",
                                 str(registry.path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        with open(log, "a") as handle:
            handle.write("second\nthird\n")
        time.sleep(1.0)
        registry.remove("p1")  # the pilot ended
        out, err = follower.communicate(timeout=30)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert out.splitlines() == ["first", "second", "third"]
    assert "p1 ended" in err


def test_ls_shows_pending_reason_and_prune_forgets_jobs_gone(registry: Registry,
                                                            queue: Path) -> None:
    publish_pending(registry, "m.a.0-0", "4242")
    publish_pending(registry, "m.a.1-0", "4243")
    queue.write_text(job_line("4242"))  # 4243 was cancelled by hand
    listing = cli("ls", "--json", "--registry", str(registry.path))
    rows = {r["id"]: r for r in json.loads(listing.stdout)}
    assert rows["m.a.0-0"]["queue"]["reason"] == "Resources"
    assert rows["m.a.0-0"]["detail"].startswith("job 4242 pending: waiting for nodes")
    assert rows["m.a.1-0"]["queue"] == {"job_id": "4243", "state": "GONE"}
    table = cli("ls", "--registry", str(registry.path))
    assert "waiting for nodes to become free (Resources)" in table.stdout
    pruned = cli("ls", "--prune", "--registry", str(registry.path))
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned pending entry m.a.1-0" in pruned.stderr
    assert [e.id for e in registry.scan().entries] == ["m.a.0-0"]


def test_stop_leaves_queued_jobs_unless_asked(registry: Registry, queue: Path) -> None:
    publish_pending(registry, "m.a.0-0", "4242")
    publish_pending(registry, "m.b.0-0", "4250")  # cancelled by hand: gone from the queue
    queue.write_text(job_line("4242"))
    result = cli("stop", "--all", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert "left in the queue: job 4242 (1 pending endpoint(s))" in result.stderr
    assert "removed pending entry m.b.0-0: job 4250 left the queue" in result.stderr
    assert [e.id for e in registry.scan().entries] == ["m.a.0-0"]
    assert not (registry.path / "m.a.0-0.stop").exists()  # it would start only to stop
    named = cli("stop", "m.a.0-0", "--registry", str(registry.path))
    assert named.returncode == 2 and "pass --cancel-pending" in named.stderr
    assert not (queue.parent / "calls").exists() or "scancel" not in (
        queue.parent / "calls").read_text()
    result = cli("stop", "--all", "--cancel-pending", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert "cancelled queued job 4242" in result.stderr
    assert "scancel -- 4242" in (queue.parent / "calls").read_text()
    assert registry.scan().entries == []


def test_stop_scancels_a_job_that_outlasts_the_drain_budget(registry: Registry,
                                                            queue: Path) -> None:
    # A ready pilot whose job no longer listens to stop requests (hung node, killed pilot).
    registry.publish(make_endpoint(id="r1", slurm_job_id="4300", ttl=3600.0))
    queue.write_text(job_line("4300", "RUNNING", reason="None"))
    result = cli("stop", "r1", "--timeout", "0.5", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert "drain budget of 0 s ended: cancelled job 4300 (scancel)" in result.stderr
    assert "scancel -- 4300" in (queue.parent / "calls").read_text()
    assert registry.scan().entries == []


def test_stop_never_scancels_someone_elses_job(registry: Registry, queue: Path) -> None:
    registry.publish(make_endpoint(id="r1", slurm_job_id="4300", ttl=3600.0))
    queue.write_text(job_line("4300", "RUNNING", user="mallory", reason="None"))
    result = cli("stop", "r1", "--timeout", "0.3", "--registry", str(registry.path))
    assert result.returncode == 1
    assert "job 4300 belongs to mallory: not cancelled" in result.stderr
    assert "still running after 0 s: r1" in result.stderr
    assert "scancel" not in (queue.parent / "calls").read_text()
