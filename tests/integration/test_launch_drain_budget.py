"""`nerschat stop` drains, then cancels: a launched pilot still there when the drain budget
ends has its SLURM job cancelled (`scancel`), and its entry removed."""

from __future__ import annotations

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.conftest import squeue_ids
from tests.integration.launching import launch_json, nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_job_outlasting_the_drain_budget_is_cancelled(registry: Registry,
                                                      our_jobs: list[str]) -> None:
    reg = ("--registry", str(registry.path))
    (job,) = launch_json("--site", "slurm", "--engine", "stub", "--model", "d", "--walltime",
                         "00:05:00", *reg, our_jobs=our_jobs)
    job_id = str(job["job_id"])
    wait_until(lambda: len(registry.endpoints("d")) == 1, 120, "the pilot ready")
    # A budget of 0 s: the pilot cannot have drained, so its job is cancelled.
    stop = nerschat("stop", "--all", "--timeout", "0", *reg)
    assert stop.returncode == 0, stop.stderr
    assert f"drain budget of 0 s ended: cancelled job {job_id} (scancel)" in \
        " ".join(stop.stderr.split())
    assert job_id not in squeue_ids()
    wait_until(lambda: registry.scan().entries == [], 10, "no entry left")
