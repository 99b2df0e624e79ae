"""GPU-hours of a pool: from each member job's start and end times and its GPUs.

A member counts from its job's start (squeue's start time while it runs) to the moment the
pool saw it leave (or now while it lives). `sacct` is not needed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nerschat.pool.state import Member, PoolState


@dataclass(frozen=True)
class Usage:
    """What a pool used so far and what the rest of its input needs.

    `replica_hours` counts job hours whatever their GPUs (a stub or CPU pool uses no GPU);
    the rates and estimates are None when there is nothing to divide by.
    """

    replica_hours: float
    gpu_hours: float
    items_done: int | None = None
    items_total: int | None = None
    items_per_gpu_hour: float | None = None
    items_per_replica_hour: float | None = None
    gpu_hours_rest: float | None = None
    replica_hours_rest: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def member_hours(member: Member, now: float) -> float:
    """Hours the member's job has run (0 if it never started)."""
    if member.started_at is None:
        return 0.0
    end = member.ended_at if member.ended_at is not None else now
    return max(0.0, end - member.started_at) / 3600.0


def usage(state: PoolState, now: float, progress: tuple[int, int | None] | None = None) -> Usage:
    """The pool's usage at `now`; `progress` is `(done, total)` items, when known."""
    replica_hours = sum(member_hours(m, now) for m in state.members)
    gpu_hours = sum(member_hours(m, now) * m.gpus for m in state.members)
    if progress is None:
        return Usage(replica_hours, gpu_hours)
    done, total = progress
    per_gpu = done / gpu_hours if gpu_hours > 0 and done > 0 else None
    per_replica = done / replica_hours if replica_hours > 0 and done > 0 else None
    rest = None if total is None else max(0, total - done)
    return Usage(
        replica_hours, gpu_hours, done, total, per_gpu, per_replica,
        gpu_hours_rest=None if rest is None or per_gpu is None else rest / per_gpu,
        replica_hours_rest=None if rest is None or per_replica is None else rest / per_replica,
    )
