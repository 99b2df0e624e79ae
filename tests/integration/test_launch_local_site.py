"""`nerschat launch --site local`: pilots as local background processes, stopped by
`nerschat stop --all`."""

from __future__ import annotations

import json

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.launching import nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_local_site_runs_pilots_as_local_processes(registry: Registry) -> None:
    out = nerschat("launch", "--site", "local", "--engine", "stub", "--model", "loc",
                   "--replicas", "2", "--registry", str(registry.path), "--json")
    assert out.returncode == 0, out.stderr
    jobs = json.loads(out.stdout)
    assert len(jobs) == 2 and not any(j["slurm"] for j in jobs)
    try:
        wait_until(lambda: len(registry.endpoints("loc")) == 2, 60, "two local pilots ready")
        assert all(e.slurm_job_id is None for e in registry.endpoints("loc"))
    finally:
        stop = nerschat("stop", "--all", "--registry", str(registry.path))
    assert stop.returncode == 0, stop.stderr
    assert registry.scan().entries == []
