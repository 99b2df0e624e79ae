"""`nerschat launch` on the repo's real local SLURM (2 fake GPUs) and as local processes:
pending while the node is busy, ready once it frees, `stop --all` leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.fakes import slurm_commands
from tests.integration.conftest import squeue_ids

FAKE_RUNTIME = Path(__file__).resolve().parents[1] / "fakes" / "container_runtime.py"

pytestmark = [pytest.mark.slow]


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A registry on the home file system: a cluster site refuses /tmp (node-local)."""
    path = Path.home() / ".cache" / "nerschat" / "test-launch" / uuid.uuid4().hex[:8]
    try:
        yield Registry(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def our_jobs(local_slurm: str) -> Iterator[list[str]]:
    """Job ids a test submitted; whatever of them is still queued is cancelled afterwards."""
    jobs: list[str] = []
    yield jobs
    left = [j for j in jobs if j in squeue_ids()]
    if left:
        subprocess.run(["scancel", *left], timeout=30)


def nerschat(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run([sys.executable, "-m", "nerschat.cli.main", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PATH": path, **(env or {})})


def states(registry: Registry) -> dict[str, tuple[str, str | None]]:
    return {e.id: (e.state, e.slurm_job_id) for e in registry.scan().entries}


@pytest.mark.slurm
def test_launch_pending_then_ready_then_stop_all(registry: Registry, our_jobs: list[str],
                                                 tmp_path: Path) -> None:
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", "-t", "3", "-J",
                              "nerschat-blocker", f"--output={tmp_path}/blocker.out",
                              "--wrap", "sleep 170"],
                             capture_output=True, text=True, check=True).stdout.strip()
    our_jobs.append(blocker)
    out = nerschat("launch", "--site", "slurm", "--engine", "stub", "--model", "m", "--replicas",
                   "3", "--walltime", "00:05:00", "--registry", str(registry.path), "--json")
    assert out.returncode == 0, out.stderr
    jobs = json.loads(out.stdout)
    our_jobs.extend(j["job_id"] for j in jobs)
    assert len(jobs) == 3 and all(j["slurm"] for j in jobs)
    # Visible from submission: pending, with the job that will run it.
    assert states(registry) == {j["ids"][0]: ("pending", j["job_id"]) for j in jobs}
    listing = nerschat("ls", "--registry", str(registry.path), "--json")
    assert listing.returncode == 0, listing.stderr
    assert {e["state"] for e in json.loads(listing.stdout)} == {"pending"}
    subprocess.run(["scancel", blocker], check=True)
    wait_until(lambda: len(registry.endpoints("m")) == 3, 60, "three ready pilots")
    assert {e.slurm_job_id for e in registry.endpoints("m")} == {j["job_id"] for j in jobs}
    stop = nerschat("stop", "--all", "--registry", str(registry.path))
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: not set(squeue_ids()) & {j["job_id"] for j in jobs}, 60,
               "the pilot jobs to end")
    assert registry.scan().entries == []


@pytest.mark.slurm
def test_stop_all_cancels_jobs_still_queued(registry: Registry, our_jobs: list[str],
                                            tmp_path: Path) -> None:
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", "-t", "2", "-J",
                              "nerschat-blocker", f"--output={tmp_path}/blocker.out",
                              "--wrap", "sleep 110"],
                             capture_output=True, text=True, check=True).stdout.strip()
    our_jobs.append(blocker)
    out = nerschat("launch", "--site", "slurm", "--engine", "stub", "--model", "q", "--registry",
                   str(registry.path), "--json")
    assert out.returncode == 0, out.stderr
    (job,) = json.loads(out.stdout)
    our_jobs.append(job["job_id"])
    stop = nerschat("stop", "--all", "--registry", str(registry.path), "--timeout", "10")
    assert stop.returncode == 0, stop.stderr
    assert f"cancelled queued job {job['job_id']}" in stop.stderr
    assert job["job_id"] not in squeue_ids()
    assert registry.scan().entries == []


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
