"""A pool of 2 stub replicas on the local real SLURM with 3-minute walltimes, under steady load:
a member scancel'd or frozen is replaced within 30 s, a member nearing its walltime hands over to a ready
replacement, no request is lost or answered twice, and the ready count never falls below 2
outside the loss."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.pool import Pool, Timing
from nerschat.pool import state as store
from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from nerschat.testing.pool_load import ReadySampler, SteadyLoad
from tests.integration.conftest import squeue_ids

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

MODEL = "pool-it"


@pytest.fixture
def registry(local_slurm: str) -> Iterator[Registry]:
    """On the home file system: a cluster site refuses /tmp (node-local)."""
    path = Path.home() / ".cache" / "nerschat" / "test-pool" / uuid.uuid4().hex[:8]
    try:
        yield Registry(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_pool_replaces_lost_members_and_hands_over_before_the_walltime(
        registry: Registry) -> None:
    pool = Pool("stub", MODEL, 2, registry=registry, site="slurm", walltime="00:03:00",
                drain_before=10, timing=Timing(lead_floor=20, overlap=5))
    sampler = ReadySampler(registry, MODEL)
    frozen_entry = None
    load = SteadyLoad(registry, MODEL, rate=4.0)
    try:
        pool.start()
        pool.wait_ready(timeout=120)
        sampler.start()
        load.start()
        time.sleep(15)

        # Loss: scancel one member; the pool replaces it.
        victim = next(m for m in pool.state.members if m.phase == "ready")
        subprocess.run(["scancel", victim.job_id], check=True, timeout=30)
        lost_at = time.time()
        wait_until(lambda: victim.phase == "gone" and len(
            [e for e in registry.endpoints(MODEL) if e.id != victim.id]) >= 2, 30,
            "a replacement for the scancel'd member")
        replaced_at = time.time()
        assert victim.reason.startswith("lost")
        assert pool.state.replaced_losses >= 1

        # A frozen pilot (its server still answers, its heartbeat stops): replaced too.
        frozen = max((m for m in pool.state.members if m.phase == "ready"),
                     key=lambda m: m.submitted_at)
        frozen_entry = registry.get(frozen.id)
        assert frozen_entry is not None
        os.kill(frozen_entry.pid, signal.SIGSTOP)
        frozen_at = time.time()
        wait_until(lambda: frozen.phase == "gone" and len(
            [e for e in registry.endpoints(MODEL) if e.id != frozen.id]) >= 2, 40,
            "a replacement for the frozen member")
        unfrozen_at = time.time()
        with contextlib.suppress(ProcessLookupError):
            os.kill(frozen_entry.pid, signal.SIGCONT)
        assert "stale" in frozen.reason

        # Hand-over: the other first member reaches its walltime horizon.
        wait_until(lambda: len(pool.state.handovers) >= 1, 200, "a hand-over")
        handover = pool.state.handovers[0]
        old = next(m for m in pool.state.members if m.id == handover.old)
        wait_until(lambda: old.phase == "gone", 60, "the handed-over member to leave")
        time.sleep(3)
    finally:
        if frozen_entry is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen_entry.pid, signal.SIGCONT)
        load.stop()
        sampler.stop()
        pool.stop(timeout=120)
        jobs = [m.job_id for m in pool.state.members]
        left = [j for j in jobs if j in squeue_ids()]
        if left:
            subprocess.run(["scancel", *left], timeout=30)

    assert load.errors == []
    assert load.sent > 100 and load.lost == 0 and load.duplicated == 0
    assert handover.overlap_s >= 5
    assert old.reason == "handed over"
    assert old.ended_at is not None and old.expires_at is not None
    assert old.expires_at - old.ended_at > 5  # left before SLURM's walltime ended it
    assert replaced_at - lost_at <= 30
    assert unfrozen_at - frozen_at <= 30
    final = store.read_state(registry, pool.id)
    # The local cluster is shared: other tests' clean-ups may scancel our jobs too. Every loss
    # (ours and theirs) excuses the 30 s its replacement may take, and must be replaced in it.
    losses = [m.ended_at for m in final.members if m.reason.startswith("lost") and m.ended_at]
    for ended in losses:
        assert any(n >= 2 for t, n in sampler.samples if ended < t <= ended + 30), (
            f"loss at {ended} not replaced within 30 s:\n{sampler.timeline()}")
    outside_loss = [n for t, n in sampler.samples
                    if not any(e - 10 <= t <= e + 30 for e in [lost_at, *losses])]
    assert outside_loss and min(outside_loss) >= 2, sampler.timeline()
    print(f"\nready timeline:\n{sampler.timeline()}\nrequests {load.sent}, lost {load.lost}, "
          f"duplicated {load.duplicated}; overlaps "
          f"{[round(h.overlap_s, 1) for h in final.handovers]} s; losses {len(losses)}; "
          f"scancel'd member replaced in {replaced_at - lost_at:.1f} s, frozen one in "
          f"{unfrozen_at - frozen_at:.1f} s")
    assert final.status == "stopped"
    assert all(not m.live for m in final.members)
