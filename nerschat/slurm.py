"""What nerschat asks SLURM (`squeue`, `scancel`): job states, a client's pending pilot jobs.

Every question is best effort: without `squeue`, or when it fails, the answer is empty.
`squeue` is a subprocess that can take seconds on a busy cluster: nothing on a request path
calls it; the readiness wait asks through a `PendingJobs` cache.
"""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

from nerschat.errors import UsageError

JOB_ID = re.compile(r"\d{1,12}(?:_\d{1,9}|\+\d{1,6})?(?:\.[A-Za-z0-9_]{1,32})?", re.ASCII)
"""A SLURM job id: `ID`, an array task `ID_TASK`, a heterogeneous component `ID+N`, each
optionally with a step (`ID.0`, `ID.batch`). Anything else is never passed to a SLURM command:
job ids come from registry entries and pool state files, which others may write."""


class JobIdError(UsageError):
    """A value that is not a SLURM job id where one was expected (never passed to SLURM)."""


def is_job_id(value: object) -> bool:
    """Whether `value` is a string of one of the `JOB_ID` forms."""
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def job_id_problem(value: object) -> str | None:
    """Why `value` is not a SLURM job id (one line, the value escaped), or None if it is one."""
    if is_job_id(value):
        return None
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{shown} is not a SLURM job id (ID, ID_TASK or ID+N, optionally .STEP)"


def job_operands(job_ids: Collection[str]) -> list[str]:
    """`["--", ID, ...]`: job ids as the operands of a SLURM command (`scancel`).

    The one place job ids are checked before they reach a command line: JobIdError naming
    the first value that is not a job id (so nothing is run at all), and `--` so that no id
    can ever be read as an option.
    """
    for job in job_ids:
        problem = job_id_problem(job)
        if problem:
            raise JobIdError(f"{problem}: not passed to SLURM")
    return ["--", *job_ids]

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


WALLTIME_FORMS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
MAX_WALLTIME_SECONDS = 365 * 86400
_WALLTIME = re.compile(r"(?:(?P<days>\d{1,3})-)?(?P<parts>\d{1,6}(?::\d{1,2}){0,2})", re.ASCII)


@dataclass(frozen=True)
class Walltime:
    """A job's time limit: `seconds`, and `hms`, the `HH:MM:SS` form Parsl's SlurmProvider takes.

    Hours may pass 24 (`1-00:00:00` is `24:00:00`): Parsl's `wtime_to_minutes` splits on `:`
    into exactly three integers and drops the seconds.
    """

    seconds: int

    @property
    def hms(self) -> str:
        """`HH:MM:SS`, hours not wrapped into days."""
        hours, rest = divmod(self.seconds, 3600)
        return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"


def parse_walltime(text: object) -> Walltime:
    """A SLURM time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`).

    Minutes and seconds after a colon must be below 60, hours after `D-` below 24; the limit
    must be at least a minute (Parsl and SLURM count whole minutes) and at most a year.
    ValueError (one line, naming the forms) for anything else.
    """
    shown = repr(text) if not isinstance(text, str) or len(text) <= 40 else repr(text[:37] + "...")
    match = _WALLTIME.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"walltime {shown} is not a SLURM time ({WALLTIME_FORMS}, e.g. "
                         f"01:30:00)")
    numbers = [int(p) for p in match["parts"].split(":")]
    if match["days"] is not None:
        hours, minutes, seconds = (numbers + [0, 0])[:3]
        if hours >= 24:
            raise ValueError(f"walltime {shown}: hours after 'D-' must be below 24")
        total = ((int(match["days"]) * 24 + hours) * 60 + minutes) * 60 + seconds
        checked = numbers[1:]
    elif len(numbers) == 1:
        total, checked = numbers[0] * 60, []
    elif len(numbers) == 2:
        total, checked = numbers[0] * 60 + numbers[1], numbers[1:]
    else:
        total, checked = (numbers[0] * 60 + numbers[1]) * 60 + numbers[2], numbers[1:]
    if any(n >= 60 for n in checked):
        raise ValueError(f"walltime {shown}: minutes and seconds must be below 60 "
                         f"({WALLTIME_FORMS})")
    if total < 60:
        raise ValueError(f"walltime {shown} is less than a minute (SLURM counts minutes)")
    if total > MAX_WALLTIME_SECONDS:
        raise ValueError(f"walltime {shown} is more than a year")
    return Walltime(total)


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


def describe_reason(reason: str) -> str:
    """SLURM's pending reason in plain words, with SLURM's own word: `waiting ... (Resources)`."""
    if not reason or reason == "None":
        return "pending"
    plain = REASONS.get(reason)
    return f"{plain} ({reason})" if plain else reason


def format_start(when: float | None, now: float | None = None) -> str:
    """An expected start as `expected start 2026-12-01 10:00 (in 25m)`; "" when unknown."""
    if when is None:
        return ""
    now = time.time() if now is None else now
    wait = when - now
    left = (f" (in {wait / 60:.0f}m)" if wait < 7200 else f" (in {wait / 3600:.1f}h)"
            ) if wait > 0 else ""
    return f"expected start {datetime.fromtimestamp(when).strftime('%Y-%m-%d %H:%M')}{left}"


@dataclass(frozen=True)
class PendingJob:
    """A job of this user still in the queue.

    Its id, name, SLURM's reason (may be "") and, where SLURM's scheduler has computed one,
    the expected start (epoch seconds).
    """

    job_id: str
    name: str
    reason: str = ""
    expected_start: float | None = None

    def describe(self) -> str:
        """`job 4242 (nerschat-serve): waiting for nodes to become free, expected start ...`."""
        why = REASONS.get(self.reason, self.reason) or "pending"
        label = f" ({self.name})" if self.name else ""
        start = format_start(self.expected_start)
        return f"job {self.job_id}{label}: {why}" + (f", {start}" if start else "")


@dataclass(frozen=True)
class QueuedJob:
    """A job as `squeue` shows it.

    State (`PENDING`, `RUNNING`, ...), pending reason, expected start (epoch seconds, None
    when SLURM does not know), owner, name and nodes.
    """

    job_id: str
    state: str
    reason: str = ""
    expected_start: float | None = None
    user: str = ""
    name: str = ""
    nodes: str = ""

    def describe(self, now: float | None = None) -> str:
        """`job 4242 pending: waiting for nodes to become free (Resources), expected start ...`."""
        if self.state != "PENDING":
            where = f" on {self.nodes}" if self.nodes else ""
            return f"job {self.job_id} {self.state.lower()}{where}"
        start = format_start(self.expected_start, now)
        return (f"job {self.job_id} pending: {describe_reason(self.reason)}"
                + (f", {start}" if start else ""))


def queued_jobs(job_ids: Collection[str], timeout: float = 30.0) -> dict[str, QueuedJob] | None:
    """The given jobs that are still in the queue, by id (one `squeue` call).

    A job missing from the answer has left the queue (ended, cancelled, refused). None when
    SLURM cannot answer (no `squeue`, a timeout, an error other than unknown job ids): then
    nothing can be said about any of them. Ids that are not plain job ids are never asked.
    """
    ids = sorted({j for j in job_ids if is_job_id(j)})
    if not ids:
        return {}
    if not available():
        return None
    try:
        out = subprocess.run(["squeue", "-h", "--jobs", ",".join(ids),
                              "--format=%i|%T|%S|%u|%j|%N|%r"],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    jobs: dict[str, QueuedJob] = {}
    for line in out.stdout.splitlines():
        parts = line.split("|", 6)
        if len(parts) < 7:
            continue
        job_id, state, start, user, name, nodes, reason = (p.strip() for p in parts)
        jobs[job_id] = QueuedJob(job_id, state, reason, parse_slurm_time(start), user, name,
                                 nodes)
    return jobs


def scancel(job_ids: Collection[str], timeout: float = 120.0) -> str | None:
    """Cancel jobs (`scancel -- ID...`); None on success, else a one-line reason.

    A value that is not a job id (see `JOB_ID`) cancels nothing at all: the reason names it.
    """
    unique = list(dict.fromkeys(job_ids))
    if not unique:
        return None
    try:
        job_operands(unique)
    except JobIdError as exc:
        return str(exc)
    ids = sorted(unique)
    operands = ["--", *ids]
    try:
        out = subprocess.run(["scancel", *operands], capture_output=True, text=True,
                             timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scancel {' '.join(ids)} failed: {exc}"
    if out.returncode != 0:
        return f"scancel {' '.join(ids)} failed: {' '.join(out.stderr.split())[:300]}"
    return None


def is_nerschat_job_name(name: str) -> bool:
    """Names nerschat gives its pilot jobs: `nerschat`, `nerschat-*` (the sbatch script's)."""
    return name == "nerschat" or name.startswith(("nerschat-", "nerschat_"))


def pending_jobs(timeout: float = 5.0) -> list[PendingJob]:
    """This user's pending jobs (one `squeue` call), with their expected start where known."""
    out = squeue("-u", getpass.getuser(), "-t", "PENDING", "-o", "%i %j %r|%S", timeout=timeout)
    jobs = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if parts:
            rest = parts[2].strip() if len(parts) > 2 else ""
            reason, _, start = rest.rpartition("|") if "|" in rest else (rest, "", "")
            jobs.append(PendingJob(parts[0], parts[1] if len(parts) > 1 else "",
                                   reason.strip(), parse_slurm_time(start)))
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
        """The caller's pending jobs, asking squeue again only when the answer is `max_age` s old."""
        with self._lock:
            if time.monotonic() - self._asked_at >= self.max_age:
                self._jobs = pending_jobs()
                self._asked_at = time.monotonic()
            return list(self._jobs)
