"""`nerschat.launch(...)` from Python: handles with `.job_id`, `.wait_ready()`, `.stop()`."""

from __future__ import annotations

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.launching import our_jobs, registry

pytestmark = [pytest.mark.slow]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_python_api_handles_wait_and_stop(registry: Registry) -> None:
    import nerschat

    jobs = nerschat.launch("stub", "api", replicas=2, site="local", registry=registry, ttl=3)
    try:
        assert len(jobs) == 2 and all(j.job_id for j in jobs)
        ready = [e for job in jobs for e in job.wait_ready(timeout=60)]
        assert sorted(e.id for e in ready) == sorted(i for job in jobs for i in job.ids)
    finally:
        for job in jobs:
            job.stop()
    wait_until(lambda: registry.scan().entries == [], 30, "the launched pilots to stop")
