"""What the `nerschat launch` scenarios share: a registry on a shared file system, the
`nerschat` command, a job that holds the local SLURM node, and clean-up of submitted jobs."""

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
from tests.integration.conftest import squeue_ids

FAKE_RUNTIME = Path(__file__).resolve().parents[1] / "fakes" / "container_runtime.py"


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


def nerschat(*args: str, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run `nerschat ARGS` with this venv first on PATH (what the jobs activate)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run([sys.executable, "-m", "nerschat.cli.main", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PATH": path, **(env or {})})


def hold_the_node(tmp_path: Path, our_jobs: list[str], minutes: int = 3) -> str:
    """Submit an exclusive job that keeps the node busy (so launched jobs stay pending)."""
    blocker = subprocess.run(["sbatch", "--parsable", "--exclusive", "-t", str(minutes), "-J",
                              "holds-the-node", f"--output={tmp_path}/blocker.out",
                              "--wrap", f"sleep {minutes * 60 - 10}"],
                             capture_output=True, text=True, check=True).stdout.strip()
    our_jobs.append(blocker)
    return blocker


def launch_json(*args: str, our_jobs: list[str], env: dict[str, str] | None = None
                ) -> list[dict[str, object]]:
    """`nerschat launch ARGS --json`; the jobs are recorded for clean-up."""
    out = nerschat("launch", *args, "--json", env=env)
    assert out.returncode == 0, out.stderr
    jobs: list[dict[str, object]] = json.loads(out.stdout)
    our_jobs.extend(str(j["job_id"]) for j in jobs)
    return jobs


def states(registry: Registry) -> dict[str, tuple[str, str | None]]:
    """Entry id -> (state, job id)."""
    return {e.id: (e.state, e.slurm_job_id) for e in registry.scan().entries}
