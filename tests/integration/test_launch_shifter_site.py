"""A Shifter site on the real SLURM with fake `shifter`/`shifterimg` recording their calls:
the image is checked before queuing, pilots run through Shifter with the site's modules."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.fakes import slurm_commands
from tests.integration.conftest import squeue_ids
from tests.integration.launching import FAKE_RUNTIME, nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow]
__all__ = ["our_jobs", "registry"]  # fixtures


@pytest.mark.slurm
def test_shifter_site_checks_the_image_then_runs_pilots_through_shifter(
        registry: Registry, our_jobs: list[str], tmp_path: Path) -> None:
    """A Shifter site on the real SLURM, with fake `shifter`/`shifterimg` recording calls."""
    bin_dir = tmp_path / "bin"
    slurm_commands.install(bin_dir, tmp_path / "calls.log")
    for name in ("sbatch", "sacct", "squeue", "scancel"):  # keep the real scheduler
        (bin_dir / name).unlink()
    (bin_dir / "shifter").symlink_to(FAKE_RUNTIME)
    env = {"PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
                   f"{os.environ['PATH']}",
           "FAKE_SLURM_LOG": str(tmp_path / "calls.log"), "FAKE_RUNTIME_LOG": str(tmp_path / "rt"),
           "NERSCHAT_RUNTIME": "shifter", "NERSCHAT_RUNTIME_MODULES": "gpu,nccl-plugin",
           "NERSCHAT_GPUS_PER_NODE": "2"}
    args = ("launch", "--site", "slurm", "--engine", "stub", "--model", "shi", "--replicas", "2",
            "--gpus-per-replica", "1", "--image", "test/stub:1", "--walltime", "00:05:00",
            "--registry", str(registry.path), "--json")
    missing = nerschat(*args, env={**env, "FAKE_SHIFTER_IMAGES": "other/image:2"})
    assert missing.returncode == 2
    assert "`shifterimg pull test/stub:1`" in missing.stderr
    assert registry.scan().entries == []  # nothing queued
    out = nerschat(*args, env={**env, "FAKE_SHIFTER_IMAGES": "test/stub:1"})
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)  # two one-GPU replicas packed on one two-GPU node
    our_jobs.append(job["job_id"])
    wait_until(lambda: len(registry.endpoints("shi")) == 2, 60, "both Shifter pilots ready")
    calls = [json.loads(line) for line in (tmp_path / "rt").read_text().splitlines()]
    assert len(calls) == 2
    gpus = []
    for call in calls:
        argv = call["argv"][1:]
        assert argv[0] == "--image=test/stub:1" and argv[1] == "--module=gpu,nccl-plugin"
        gpus += [a.split("=", 2)[2] for a in argv if a.startswith("--env=CUDA_VISIBLE_DEVICES=")]
    assert sorted(gpus) == ["0", "1"]
    assert nerschat("stop", "--all", "--registry", str(registry.path)).returncode == 0
    wait_until(lambda: job["job_id"] not in squeue_ids(), 60, "the job to end")
