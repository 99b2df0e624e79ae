"""Waiting for a ready endpoint, and saying clearly what was seen when none came.

Two budgets: `timeout` is for a server to start (and is counted only while no pilot job of
ours is still queued in SLURM); `queue_timeout` is for the queue itself (default: no limit).
A job is ours when a registry entry recorded its id (state `pending`, written at submit
time) or when it carries the name nerschat gives its jobs (`nerschat-serve`, `nerschat-*`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from nerschat import slurm
from nerschat.errors import FailureError
from nerschat.pilot.describe import describe_phase
from nerschat.registry import Endpoint, Registry
from nerschat.server_log import last_line
from nerschat.slurm import PendingJob, PendingJobs


class EndpointTimeout(FailureError, TimeoutError):
    """No usable endpoint appeared in time; the message is one line saying what was seen."""


def _matches(entry: Endpoint, model: str | None, kind: str | None) -> bool:
    return (model is None or entry.model == model) and (kind is None or entry.kind == kind)


def _target(model: str | None, kind: str | None) -> str:
    if model and kind:
        return f"{kind} model {model!r}"
    if model:
        return f"model {model!r}"
    return f"any {kind} endpoint" if kind else "any endpoint"


def our_pending_jobs(entries: list[Endpoint], model: str | None, kind: str | None,
                     queued: list[PendingJob], *, now: float | None = None) -> list[PendingJob]:
    """The pending jobs that will serve `model`/`kind`: recorded ids, or nerschat's job names.

    `queued` is what `squeue` shows pending. Without SLURM commands (`squeue` not on PATH),
    fresh `pending` entries are believed as recorded.
    """
    now = time.time() if now is None else now
    recorded = {e.slurm_job_id: e for e in entries
                if e.state == "pending" and e.slurm_job_id and _matches(e, model, kind)}
    jobs = [job for job in queued
            if job.job_id in recorded or is_ours_by_name(job, entries)]
    if not slurm.available():
        jobs += [PendingJob(job_id, e.engine, "recorded as pending")
                 for job_id, e in recorded.items() if job_id and not e.is_stale(now)]
    return jobs


def is_ours_by_name(job: PendingJob, entries: list[Endpoint]) -> bool:
    """A job named like nerschat's, not recorded for another model in the registry."""
    if not slurm.is_nerschat_job_name(job.name):
        return False
    return not any(e.slurm_job_id == job.job_id for e in entries)


def describe_pending(jobs: list[PendingJob], queued_for: float | None = None) -> str:
    """`SLURM job 4242 (nerschat-serve): waiting ... (queued for 12 s)`."""
    shown = "; ".join(job.describe() for job in jobs[:3])
    more = f" and {len(jobs) - 3} more" if len(jobs) > 3 else ""
    since = f" (queued for {queued_for:.0f} s)" if queued_for is not None else ""
    return f"SLURM {shown}{more}{since}"


def describe_status(registry: Registry, model: str | None = None, kind: str | None = None,
                    entries: list[Endpoint] | None = None,
                    pending: list[PendingJob] | None = None) -> str:
    """One line on why nothing usable is there yet: nothing registered, starting, stale.

    Never runs `squeue` itself: pass the pending jobs (from a `PendingJobs` cache) to have
    them mentioned.
    """
    now = time.time()
    if entries is None:
        entries = registry.scan().entries
    matching = [e for e in entries if _matches(e, model, kind) and e.state != "pending"]
    target = _target(model, kind)
    if pending:
        return f"{target}: pilot {describe_pending(pending)}"
    queued = sorted({e.slurm_job_id for e in entries if e.state == "pending" and e.slurm_job_id
                     and _matches(e, model, kind) and not e.is_stale(now)})
    if queued and not matching:  # recorded at launch; squeue not asked (or cannot answer)
        more = f" and {len(queued) - 3} more" if len(queued) > 3 else ""
        return (f"{target}: pilot job {', '.join(queued[:3])}{more} queued, not started yet "
                f"(see 'nerschat ls')")
    if not matching:
        others = sorted({e.model for e in entries if not e.is_stale(now)})
        seen = f"; registered: {', '.join(others)}" if others else ""
        return f"nothing registered for {target} in {registry.path}{seen}"
    fresh = [e for e in matching if not e.is_stale(now)]
    starting = [e for e in fresh if e.state == "starting"]
    if starting:
        oldest = min(starting, key=lambda e: e.started_at)
        phase = describe_phase(oldest, now, log_line=last_line(registry, oldest.id))
        return f"{target}: {len(starting)} endpoint(s) starting, the oldest {phase}"
    if any(e.state == "draining" for e in fresh):
        return f"{target}: only draining endpoints (pilots stopping)"
    if fresh:
        return f"{target}: {len(fresh)} endpoint(s) not usable"
    newest = max(e.heartbeat_at for e in matching)
    return (f"{target}: only stale entries (last heartbeat {now - newest:.0f} s ago; pilots gone? "
            f"'nerschat ls --prune' removes them)")


def wait_for_endpoints(
    registry: Registry,
    model: str | None = None,
    kind: str | None = None,
    timeout: float = 600.0,
    poll_interval: float = 0.5,
    on_status: Callable[[str], None] | None = None,
    *,
    queue_timeout: float | None = None,
    pending_jobs: PendingJobs | None = None,
) -> list[Endpoint]:
    """Block until at least one matching endpoint is ready; return the ready ones.

    `timeout` (seconds) bounds the start-up: it is counted only while none of our pilot jobs
    is pending in SLURM (the clock restarts when the queue lets the job run).
    `queue_timeout` (seconds, None = no limit) bounds the time spent waiting on the queue.
    `squeue` is asked at most every 10 s, and only while nothing is ready.
    Raises EndpointTimeout (one line: what was seen, job ids and reasons) when a budget runs out.
    """
    cache = pending_jobs or PendingJobs()
    deadline = time.monotonic() + timeout
    queued_since: float | None = None
    queued_total = 0.0
    view = registry.view()
    while True:
        entries = view.entries()
        ready = [e for e in entries if _matches(e, model, kind) and e.is_usable()]
        if ready:
            return ready
        now = time.monotonic()
        jobs = our_pending_jobs(entries, model, kind, cache.get())
        if jobs:
            queued_since = now if queued_since is None else queued_since
            queued_for = queued_total + now - queued_since
            status = f"{_target(model, kind)}: pilot {describe_pending(jobs, queued_for)}"
            if queue_timeout is not None and queued_for >= queue_timeout:
                raise EndpointTimeout(
                    f"pilot job still queued after the queue budget of {queue_timeout:.0f} s: "
                    f"{status}; raise queue_timeout / --queue-timeout, or check 'squeue --me'")
            deadline = now + timeout  # start-up time starts when the job runs
        else:
            if queued_since is not None:
                queued_total += now - queued_since
                queued_since = None
            status = describe_status(registry, model, kind, entries)
        if on_status is not None:
            on_status(status)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EndpointTimeout(f"no ready endpoint after {timeout:.0f} s: {status}")
        time.sleep(min(poll_interval, remaining))


__all__ = ["EndpointTimeout", "describe_status", "our_pending_jobs", "wait_for_endpoints"]
