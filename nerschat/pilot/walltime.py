"""The SLURM facts a pilot needs about its own job: its id and its walltime end."""

from __future__ import annotations

import os

from nerschat.slurm import is_job_id, parse_slurm_time, squeue


def current_job_id() -> str | None:
    """The SLURM job this process runs in (`SLURM_JOB_ID`), or None outside SLURM.

    A value that is not a SLURM job id (see `nerschat.slurm.JOB_ID`) counts as none: it would
    make the pilot's registry entry invalid.
    """
    value = os.environ.get("SLURM_JOB_ID") or os.environ.get("SLURM_JOBID")
    return value if is_job_id(value) else None


def job_end_time(job_id: str, timeout: float = 10.0) -> float | None:
    """The walltime end of a job, epoch seconds (None when unknown or SLURM is unreachable)."""
    if not is_job_id(job_id):
        return None
    out = squeue(f"--jobs={job_id}", "-o", "%e", timeout=timeout)
    return parse_slurm_time(out.splitlines()[0]) if out.strip() else None
