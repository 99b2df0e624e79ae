"""What nerschat asks SLURM with `squeue`: job times, a client's pending pilot jobs.

Every question is best effort: without `squeue`, or when it fails, the answer is empty.
`squeue` is a subprocess that can take seconds on a busy cluster: nothing on a request path
calls it; the readiness wait asks through a `PendingJobs` cache.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime

NERSCHAT_JOB_NAME = "nerschat-serve"
"""The job name `scripts/nerschat-serve.sbatch` gives its jobs (`-J nerschat-<anything>` too)."""

# SLURM pending reasons in plain words (squeue's %r); others are shown as SLURM spells them.
REASONS = {
    "Priority": "waiting behind higher-priority jobs",
    "Resources": "waiting for nodes to become free",
    "QOSMaxJobsPerUserLimit": "the QOS allows no more running jobs for this user",
    "QOSGrpNodeLimit": "the QOS node limit is reached",
    "AssocMaxJobsLimit": "the account allows no more running jobs",
    "ReqNodeNotAvail": "the requested nodes are not available (maintenance?)",
    "BeginTime": "its start time has not come yet",
    "Dependency": "waiting for a job it depends on",
    "JobHeldUser": "held by the user (scontrol release)",
    "JobHeldAdmin": "held by an administrator",
}


def parse_slurm_time(text: str) -> float | None:
    """SLURM prints local times as `2026-11-27T16:00:00`; `Unknown`/`N/A` mean none."""
    text = text.strip()
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").timestamp()
    except ValueError:
        return None


def available() -> bool:
    """Whether `squeue` is on PATH."""
    return shutil.which("squeue") is not None


def squeue(*args: str, timeout: float = 10.0) -> str:
    """`squeue -h ARGS` output, or "" when SLURM is absent or does not answer."""
    if not available():
        return ""
    try:
        return subprocess.run(["squeue", "-h", *args], capture_output=True, text=True,
                              timeout=timeout, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


@dataclass(frozen=True)
class PendingJob:
    """A job of this user still in the queue: id, name and SLURM's reason (may be "")."""

    job_id: str
    name: str
    reason: str = ""

    def describe(self) -> str:
        """`job 4242 (nerschat-serve): waiting for nodes to become free`."""
        why = REASONS.get(self.reason, self.reason) or "pending"
        label = f" ({self.name})" if self.name else ""
        return f"job {self.job_id}{label}: {why}"


def is_nerschat_job_name(name: str) -> bool:
    """Names nerschat gives its pilot jobs: `nerschat`, `nerschat-*` (the sbatch script's)."""
    return name == "nerschat" or name.startswith(("nerschat-", "nerschat_"))


def pending_jobs(timeout: float = 5.0) -> list[PendingJob]:
    """This user's pending jobs (one `squeue` call)."""
    out = squeue("-u", getpass.getuser(), "-t", "PENDING", "-o", "%i %j %r", timeout=timeout)
    jobs = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if parts:
            jobs.append(PendingJob(parts[0], parts[1] if len(parts) > 1 else "",
                                   parts[2].strip() if len(parts) > 2 else ""))
    return jobs


def pending_job_ids(name_contains: str = "nerschat", timeout: float = 5.0) -> list[str]:
    """This user's pending jobs whose name contains `name_contains`."""
    return [job.job_id for job in pending_jobs(timeout) if name_contains in job.name]


class PendingJobs:
    """`pending_jobs()` asked at most every `max_age` seconds (thread-safe)."""

    def __init__(self, max_age: float = 10.0):
        self.max_age = max_age
        self._lock = threading.Lock()
        self._asked_at = -1e18
        self._jobs: list[PendingJob] = []

    def get(self) -> list[PendingJob]:
        with self._lock:
            if time.monotonic() - self._asked_at >= self.max_age:
                self._jobs = pending_jobs()
                self._asked_at = time.monotonic()
            return list(self._jobs)
