"""`nerschat launch --site local --walltime`: no scheduler enforces it, so each pilot does
(field attack #12: the walltime was accepted, even `abc`, and then not applied)."""

from __future__ import annotations

import time

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.launching import nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_local_pilots_end_by_the_walltime(registry: Registry) -> None:
    started = time.time()
    out = nerschat("launch", "--site", "local", "--engine", "stub", "--model", "wt",
                   "--walltime", "5", "--registry", str(registry.path))
    assert out.returncode == 0, out.stderr
    try:
        wait_until(lambda: len(registry.endpoints("wt")) == 1, 60, "the local pilot ready")
        (entry,) = registry.endpoints("wt")
        assert entry.expires_at is not None
        assert started + 300 <= entry.expires_at <= time.time() + 300
    finally:
        stop = nerschat("stop", "--all", "--registry", str(registry.path))
    assert stop.returncode == 0, stop.stderr


def test_garbage_walltime_launches_nothing(registry: Registry) -> None:
    for walltime in ("abc", "99:99:99"):
        out = nerschat("launch", "--site", "local", "--engine", "stub", "--model", "wt",
                       "--walltime", walltime, "--registry", str(registry.path))
        assert out.returncode == 2 and "--walltime" in out.stderr
    assert registry.scan().entries == []
