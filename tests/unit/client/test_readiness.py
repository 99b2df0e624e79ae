"""Waiting for endpoints while the pilot job is still queued (a fake `squeue` on PATH)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx2
import pytest

from nerschat import slurm
from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints
from nerschat.client.routing import EndpointPool, RoutingSettings
from nerschat.client.transport import FailoverTransport
from nerschat.registry import Registry
from nerschat.slurm import PendingJobs
from tests.conftest import make_endpoint


def fake_squeue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: str) -> Path:
    """An `squeue` that prints `lines` when asked for PENDING jobs and logs each call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "squeue.calls"
    script = bin_dir / "squeue"
    script.write_text(f'#!/bin/sh\necho "$*" >> {log}\n'
                      f'case "$*" in *PENDING*) printf "{lines}";; esac\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_a_pending_nerschat_job_keeps_the_wait_going(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_squeue(tmp_path, monkeypatch, "4242 nerschat-serve Priority\\n")
    seen: list[str] = []
    with pytest.raises(EndpointTimeout) as info:
        wait_for_endpoints(registry, "llama", timeout=0.2, poll_interval=0.1,
                           on_status=seen.append, queue_timeout=1.0)
    message = str(info.value)
    assert "queue budget of 1 s" in message and "job 4242 (nerschat-serve)" in message
    assert "higher-priority" in message
    assert len(seen) >= 5, "gave up at the start-up timeout although the job was queued"


def test_a_recorded_pending_entry_is_recognised_by_its_job_id(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_squeue(tmp_path, monkeypatch, "77 my-own-name Resources\\n78 unrelated Priority\\n")
    registry.publish(make_endpoint(id="p1", model="llama", state="pending", slurm_job_id="77",
                                   url="http://pending.invalid/v1"))
    with pytest.raises(EndpointTimeout, match=r"job 77 \(my-own-name\): waiting for nodes"):
        wait_for_endpoints(registry, "llama", timeout=0.1, poll_interval=0.05,
                           queue_timeout=0.5)
    with pytest.raises(EndpointTimeout, match="nothing registered for model 'other'"):
        wait_for_endpoints(registry, "other", timeout=0.2, poll_interval=0.05,
                           queue_timeout=0.5)


def test_other_peoples_jobs_do_not_extend_the_wait(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_squeue(tmp_path, monkeypatch, "5 training-run Priority\\n")
    with pytest.raises(EndpointTimeout, match="no ready endpoint after 0 s: nothing registered"):
        wait_for_endpoints(registry, "llama", timeout=0.2, poll_interval=0.05)


def test_squeue_is_asked_at_most_every_max_age(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_squeue(tmp_path, monkeypatch, "4242 nerschat-serve Priority\\n")
    with pytest.raises(EndpointTimeout):
        wait_for_endpoints(registry, "llama", timeout=0.1, poll_interval=0.02,
                           queue_timeout=0.5, pending_jobs=PendingJobs(max_age=60))
    assert len(log.read_text().splitlines()) == 1


def test_the_request_path_never_runs_squeue(
        registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = fake_squeue(tmp_path, monkeypatch, "4242 nerschat-serve Priority\\n")
    registry.publish(make_endpoint(id="a", url="http://a.test:1/v1"))

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    pool = EndpointPool(registry, "m1", min_refresh_gap=0.0)
    transport = FailoverTransport(pool, inner=httpx2.MockTransport(refuse),
                                  settings=RoutingSettings(wait_timeout=1.0))
    reply = httpx2.Client(transport=transport).post("http://x/v1/chat/completions",
                                                    content=b'{"model": "m1"}')
    assert reply.status_code == 503
    assert not log.exists(), "squeue ran while a request was waiting"
    registry.remove("a")
    pool.refresh(force=True)
    assert "nothing registered" in pool.describe("m1") and not log.exists()


def test_pending_job_lines_without_a_reason_parse(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_squeue(tmp_path, monkeypatch, "4242 nerschat-serve\\n")
    (job,) = slurm.pending_jobs()
    assert (job.job_id, job.name, job.reason) == ("4242", "nerschat-serve", "")
    assert job.describe() == "job 4242 (nerschat-serve): pending"
