"""An elastic pool (1..3) of slow stub replicas on the local real SLURM: the engines' waiting
requests (vLLM's gauge on /metrics) add a replica, idleness drains the extra ones."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.pool import Pool, Timing
from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from nerschat.testing.pool_load import SteadyLoad
from tests.integration.conftest import squeue_ids

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

MODEL = "pool-elastic"


@pytest.fixture
def registry(local_slurm: str) -> Iterator[Registry]:
    path = Path.home() / ".cache" / "nerschat" / "test-pool" / uuid.uuid4().hex[:8]
    try:
        yield Registry(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_backlog_scales_up_and_idleness_scales_down(registry: Registry) -> None:
    pool = Pool("stub", MODEL, (1, 3), registry=registry, site="slurm", walltime="00:05:00",
                drain_before=10, options=("latency=1.0", "capacity=1"),
                timing=Timing(lead_floor=20, overlap=5, metrics_period=2, idle_after=10,
                              scale_up_waiting=3))
    load = SteadyLoad(registry, MODEL, rate=4.0)
    try:
        pool.start()
        pool.wait_ready(timeout=120)
        assert pool.state.desired == 1
        load.start()
        wait_until(lambda: pool.state.desired >= 2 and len(pool.ready_endpoints()) >= 2, 60,
                   "a second replica for the backlog")
        load.stop()
        wait_until(lambda: pool.state.desired == 1 and len(pool.state.live_members()) == 1,
                   90, "the extra replicas drained after idling")
    finally:
        load.stop()
        pool.stop(timeout=120)
        left = [m.job_id for m in pool.state.members if m.job_id in squeue_ids()]
        if left:
            subprocess.run(["scancel", *left], timeout=30)
    assert load.lost == 0 and load.duplicated == 0 and load.errors == []
    drained = [m for m in pool.state.members if m.reason == "scaled down"]
    assert drained
    assert any("scale up" in e for e in pool.state.events)
