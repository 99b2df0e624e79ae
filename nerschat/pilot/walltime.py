"""The SLURM facts a pilot needs about its own job: its id and its walltime end."""

from __future__ import annotations

import os

from nerschat.slurm import parse_slurm_time, squeue


def current_job_id() -> str | None:
    """The SLURM job this process runs in (`SLURM_JOB_ID`), or None outside SLURM."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")


def job_end_time(job_id: str, timeout: float = 10.0) -> float | None:
    """The walltime end of a job, epoch seconds (None when unknown or SLURM is unreachable)."""
    out = squeue("-j", str(job_id), "-o", "%e", timeout=timeout)
    return parse_slurm_time(out.splitlines()[0]) if out.strip() else None
