from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def local_slurm() -> Iterator[str]:
    """The repo's single-node SLURM cluster with 2 fake GPUs; yields SLURM_CONF."""
    script = REPO / "scripts" / "local-slurm.sh"
    out = subprocess.run([str(script), "start", "--gpus", "2"], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        pytest.fail(f"local SLURM did not start: {out.stderr[-2000:]}")
    conf = subprocess.run([str(script), "env"], capture_output=True, text=True).stdout
    slurm_conf = conf.strip().split("=", 1)[1]
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = slurm_conf
    try:
        yield slurm_conf
    finally:
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


def squeue_ids() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()


@pytest.fixture
def slurm_jobs(local_slurm: str) -> Iterator[list[str]]:
    """Jobs a test submits; anything of theirs still queued is scancel'd at teardown."""
    before = set(squeue_ids())
    submitted: list[str] = []
    yield submitted
    leftover = [j for j in squeue_ids() if j not in before]
    if leftover:
        subprocess.run(["scancel", *leftover], timeout=30)


def sbatch(*args: str) -> str:
    out = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.strip().split(";")[0]


def have_slurm_packages() -> bool:
    return shutil.which("sbatch") is not None
