"""A mixed pack on the local SLURM (2 fake GPUs): two stub pilots in one job, each seeing
its own GPU."""

from __future__ import annotations

import json

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.conftest import squeue_ids
from tests.integration.launching import nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow]
__all__ = ["our_jobs", "registry"]  # fixtures


@pytest.mark.slurm
def test_mixed_pack_in_one_job_each_on_its_own_gpu(registry: Registry,
                                                   our_jobs: list[str]) -> None:
    out = nerschat("launch", "--site", "slurm", "--pack", "stub:a:gpus=1", "--pack",
                   "stub:b:gpus=1", "--walltime", "00:05:00", "--registry", str(registry.path),
                   "--json", env={"NERSCHAT_GPUS_PER_NODE": "2"})
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)
    our_jobs.append(job["job_id"])
    assert len(job["ids"]) == 2
    wait_until(lambda: len(registry.endpoints()) == 2, 60, "both pilots of the pack ready")
    ready = registry.endpoints()
    assert {e.model for e in ready} == {"a", "b"}
    assert sorted(e.gpus or "" for e in ready) == ["0", "1"]
    assert {e.slurm_job_id for e in ready} == {job["job_id"]}
    assert nerschat("stop", "--all", "--registry", str(registry.path)).returncode == 0
    wait_until(lambda: job["job_id"] not in squeue_ids(), 60, "the pack's job to end")
