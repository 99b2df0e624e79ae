from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nerschat
from nerschat.pilot.local_engine import engine_python
from nerschat.registry import Registry

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def local_slurm() -> Iterator[str]:
    """The repo's single-node SLURM cluster with 4 fake GPUs; yields SLURM_CONF."""
    script = REPO / "scripts" / "local-slurm.sh"
    out = subprocess.run([str(script), "start", "--gpus", "4"], capture_output=True, text=True,
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


@pytest.fixture(scope="session")
def real_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The two real local vLLM pilots (gemma-3-270m, MiniLM), started once per session."""
    if not engine_python().exists():
        pytest.fail("local engine missing: run scripts/setup-local-engine.sh")
    registry = Registry(tmp_path_factory.mktemp("real") / "registry")
    pilots = [subprocess.Popen([sys.executable, "-m", "nerschat.cli.main", "serve", "--engine",
                                "vllm", "--model", model, "--registry", str(registry.path),
                                "--ready-timeout", "1200"])
              for model in ("local:gemma-3-270m", "local:minilm")]
    started = time.monotonic()
    try:
        for model in ("gemma-3-270m", "all-MiniLM-L6-v2"):
            nerschat.wait_for_endpoints(registry, model, timeout=1300)
        print(f"real pilots ready in {time.monotonic() - started:.0f} s")
        yield registry
    finally:
        for pilot in pilots:
            pilot.send_signal(signal.SIGTERM)
        for pilot in pilots:
            assert pilot.wait(120) == 0
        assert registry.scan().entries == []
