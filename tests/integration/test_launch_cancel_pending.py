"""Jobs still in the queue: `nerschat stop --all` leaves them (and says so);
`nerschat stop --all --cancel-pending` cancels them and removes their pending entries."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerschat.registry import Registry
from tests.integration.conftest import squeue_ids
from tests.integration.launching import hold_the_node, launch_json, nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_stop_all_cancel_pending_leaves_no_job_and_no_entry(
        registry: Registry, our_jobs: list[str], tmp_path: Path) -> None:
    hold_the_node(tmp_path, our_jobs)
    reg = ("--registry", str(registry.path))
    jobs = launch_json("--site", "slurm", "--engine", "stub", "--model", "q", "--replicas", "3",
                       "--walltime", "00:05:00", *reg, our_jobs=our_jobs)
    job_ids = {str(j["job_id"]) for j in jobs}
    assert len(job_ids) == 3 and job_ids <= set(squeue_ids())

    kept = nerschat("stop", "--all", *reg)
    assert kept.returncode == 0, kept.stderr
    assert "left in the queue: job " in kept.stderr and "--cancel-pending" in kept.stderr
    assert job_ids <= set(squeue_ids()) and len(registry.scan().entries) == 3

    stop = nerschat("stop", "--all", "--cancel-pending", *reg)
    assert stop.returncode == 0, stop.stderr
    for job in job_ids:
        assert f"cancelled queued job {job}" in stop.stderr
    assert not job_ids & set(squeue_ids())
    assert registry.scan().entries == []
    assert not list(registry.path.glob("*.stop"))
