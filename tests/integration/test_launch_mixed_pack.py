"""A mixed pack on the local SLURM (4 fake GPUs): one two-GPU and two one-GPU stub pilots in
one job, each seeing only its own GPUs (`CUDA_VISIBLE_DEVICES`), port and registry entry."""

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
def test_mixed_pack_in_one_job_each_on_its_own_gpus(registry: Registry,
                                                    our_jobs: list[str]) -> None:
    out = nerschat("launch", "--site", "slurm", "--pack", "stub:big:gpus=2", "--pack",
                   "stub:small-a:gpus=1", "--pack", "stub:small-b:gpus=1",
                   "--walltime", "00:05:00", "--registry", str(registry.path), "--json",
                   env={"NERSCHAT_GPUS_PER_NODE": "4"})
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)  # one job for the whole pack
    our_jobs.append(job["job_id"])
    assert len(job["ids"]) == 3
    wait_until(lambda: len(registry.endpoints()) == 3, 90, "the three pilots of the pack ready")
    ready = {e.model: e for e in registry.endpoints()}
    assert sorted(ready) == ["big", "small-a", "small-b"]
    assert {e.slurm_job_id for e in ready.values()} == {job["job_id"]}
    gpus = {model: (e.gpus or "").split(",") for model, e in ready.items()}
    assert len(gpus["big"]) == 2 and len(gpus["small-a"]) == 1 and len(gpus["small-b"]) == 1
    every = [g for devices in gpus.values() for g in devices]
    assert sorted(every) == ["0", "1", "2", "3"]  # each GPU given to exactly one pilot
    assert len({e.url for e in ready.values()}) == 3  # a port each
    assert nerschat("stop", "--all", "--registry", str(registry.path)).returncode == 0
    wait_until(lambda: job["job_id"] not in squeue_ids(), 60, "the pack's job to end")
