"""What a pilot learns about the SLURM job it runs in (job id, walltime end)."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime


def current_job_id() -> str | None:
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")


def parse_slurm_time(text: str) -> float | None:
    """SLURM prints local times as `2026-11-27T16:00:00`; `Unknown`/`N/A` mean none."""
    text = text.strip()
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def job_end_time(job_id: str, timeout: float = 10.0) -> float | None:
    """The walltime end of a job, from `squeue` (None when unknown or SLURM is unreachable)."""
    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", str(job_id), "-o", "%e"],
            capture_output=True, text=True, timeout=timeout, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_slurm_time(out.splitlines()[0]) if out.strip() else None


def job_states(job_ids: list[str], timeout: float = 10.0) -> dict[str, str]:
    """`{job_id: state}` (PENDING, RUNNING, ...) for jobs still known to squeue."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    try:
        out = subprocess.run(
            ["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T"],
            capture_output=True, text=True, timeout=timeout, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states
