"""What nerschat asks SLURM with `squeue`: job times, a client's pending jobs.

Every question is best effort: without `squeue`, or when it fails, the answer is empty."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from datetime import datetime


def parse_slurm_time(text: str) -> float | None:
    """SLURM prints local times as `2026-11-27T16:00:00`; `Unknown`/`N/A` mean none."""
    text = text.strip()
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def squeue(*args: str, timeout: float = 10.0) -> str:
    """`squeue -h ARGS` output, or "" when SLURM is absent or does not answer."""
    if not shutil.which("squeue"):
        return ""
    try:
        return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True,
                              timeout=timeout, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def pending_job_ids(name_contains: str = "nerschat", timeout: float = 5.0) -> list[str]:
    """This user's pending jobs whose name contains `name_contains`."""
    out = squeue("-u", getpass.getuser(), "-t", "PENDING", "-o", "%i %j", timeout=timeout)
    return [line.split()[0] for line in out.splitlines() if name_contains in line]
