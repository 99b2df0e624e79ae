"""A pool's state in the registry: `pools/<id>.json` (atomic, 0600), plus its stop request.

The controller writes the state every period; any process reads it (`nerschat pool status`)
and asks the controller to stop by writing `pools/<id>.stop` (`nerschat pool stop`).
Callers that know how far a workflow got write `pools/<id>.progress` ({done, total}); workflows
report their remaining items under `pools/workflows/` (`nerschat.pool.progress`).
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from nerschat.errors import UsageError
from nerschat.registry import Registry

POOL_DIR = "pools"
# `unhealthy`: the engine stopped answering (the pilot may recover or restart it);
# `restarting`: the pilot restarts its engine in place after a death (entry back in `starting`).
# Neither is routed to; past the controller's `restart_grace` neither counts as serving.
Phase = Literal["pending", "starting", "ready", "unhealthy", "restarting", "draining", "gone"]
PHASES = ("pending", "starting", "ready", "unhealthy", "restarting", "draining", "gone")


class PoolNotFound(UsageError):
    """No pool of that id in the registry."""


@dataclass
class Member:
    """One pilot job of a pool.

    Times are epoch seconds: `submitted_at` (sbatch), `started_at` (the job started, from
    squeue's start time), `ready_at` (the pilot answered), `drain_at` (the pool asked it to
    drain), `ended_at` (it left the registry and the queue); `expires_at` is the walltime end.
    """

    id: str
    job_id: str
    slurm: bool
    submitted_at: float
    gpus: int = 0
    phase: Phase = "pending"
    started_at: float | None = None
    ready_at: float | None = None
    expires_at: float | None = None
    drain_at: float | None = None
    ended_at: float | None = None
    reason: str = ""  # why it left: handed over, lost (...), scaled down, pool stopped
    restarts: int = 0  # engine restarts in place so far (from its pilot's entry)
    down_since: float | None = None  # unhealthy or restarting since (epoch s), None if not

    @property
    def recovering(self) -> bool:
        """Its pilot is recovering or restarting its engine (not routed to)."""
        return self.phase in ("unhealthy", "restarting")

    @property
    def live(self) -> bool:
        """Not gone yet (pending, starting, ready, unhealthy, restarting or draining)."""
        return self.phase != "gone"

    def time_left(self, now: float) -> float | None:
        """Seconds to the walltime end, None when there is none."""
        return None if self.expires_at is None else self.expires_at - now


@dataclass
class Handover:
    """A member replaced before its walltime: `overlap_s` both were ready before it drained."""

    old: str
    new: str
    new_ready_at: float
    old_drain_at: float
    old_time_left_s: float | None

    @property
    def overlap_s(self) -> float:
        """Seconds the replacement was ready before the old member was asked to drain."""
        return self.old_drain_at - self.new_ready_at


@dataclass
class PoolState:
    """What `nerschat pool status` shows; the controller is its only writer."""

    id: str
    engine: str
    model: str
    min_replicas: int
    max_replicas: int
    desired: int
    created_at: float
    until: float | None = None
    status: str = "running"  # running, stopping, stopped
    controller_pid: int = 0
    controller_host: str = ""
    heartbeat_at: float = 0.0
    lead_time_s: float = 0.0
    lead_samples: list[float] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    handovers: list[Handover] = field(default_factory=list)
    replaced_losses: int = 0
    failed_starts: int = 0  # members in a row lost before they were ever ready
    error: str = ""  # why the pool gave up, if it did
    events: list[str] = field(default_factory=list)
    launch: dict[str, Any] = field(default_factory=dict)  # the PoolSpec, to resume
    timing: dict[str, float] = field(default_factory=dict)  # the controller's Timing
    served_model: str = ""  # the name the members' entries publish (learned when ready)

    @property
    def serves(self) -> str:
        """The model name clients and workflows use for this pool's members."""
        return self.served_model or self.model

    def live_members(self) -> list[Member]:
        """Members not gone yet."""
        return [m for m in self.members if m.live]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; handovers carry their overlap."""
        data = asdict(self)
        for item, handover in zip(data["handovers"], self.handovers):
            item["overlap_s"] = round(handover.overlap_s, 3)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> PoolState:
        """Validate a decoded state file; ValueError naming what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        known = {f.name for f in fields(cls)}
        try:
            members = [Member(**{k: v for k, v in m.items() if k in _MEMBER_FIELDS})
                       for m in data.get("members", [])]
            handovers = [Handover(**{k: v for k, v in h.items() if k in _HANDOVER_FIELDS})
                         for h in data.get("handovers", [])]
            values = {k: v for k, v in data.items() if k in known}
            values.update(members=members, handovers=handovers)
            return cls(**values)
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"not a pool state ({exc})") from None


_MEMBER_FIELDS = {f.name for f in fields(Member)}
_HANDOVER_FIELDS = {f.name for f in fields(Handover)}


def pool_dir(registry: Registry) -> Path:
    """`<registry>/pools`, created with the registry's directory mode."""
    path = registry.path / POOL_DIR
    registry.ensure()
    path.mkdir(mode=registry.dir_mode, exist_ok=True)
    return path


def state_path(registry: Registry, pool_id: str) -> Path:
    """Where a pool's state lives."""
    return registry.path / POOL_DIR / f"{pool_id}.json"


def stop_path(registry: Registry, pool_id: str) -> Path:
    """The file whose existence asks a pool's controller to stop."""
    return registry.path / POOL_DIR / f"{pool_id}.stop"


def progress_path(registry: Registry, pool_id: str) -> Path:
    """`{done, total}` items of the workflow a pool serves, written by the workflow."""
    return registry.path / POOL_DIR / f"{pool_id}.progress"


def write_state(registry: Registry, state: PoolState) -> None:
    """Replace the state file atomically (registry file mode, 0600 unless shared)."""
    pool_dir(registry)
    payload = json.dumps(state.to_dict(), indent=1, sort_keys=True).encode()
    registry.write_file(state_path(registry, state.id), payload)


def read_state(registry: Registry, pool_id: str) -> PoolState:
    """A pool's state; PoolNotFound (one line, with the path) if absent or unreadable."""
    path = state_path(registry, pool_id)
    try:
        return PoolState.from_dict(json.loads(path.read_bytes()))
    except FileNotFoundError:
        raise PoolNotFound(f"no pool {pool_id!r} in {path.parent}: see 'nerschat pool "
                           "status' for the pools there") from None
    except (OSError, ValueError) as exc:
        raise PoolNotFound(f"{path}: not a pool state ({exc}); remove it if no pool "
                           "runs under that id") from None


def list_states(registry: Registry) -> list[PoolState]:
    """Every readable pool state in the registry, oldest first (unreadable files skipped)."""
    directory = registry.path / POOL_DIR
    states = []
    with contextlib.suppress(FileNotFoundError):
        for path in sorted(directory.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                states.append(PoolState.from_dict(json.loads(path.read_bytes())))
    return sorted(states, key=lambda s: s.created_at)


def request_stop(registry: Registry, pool_id: str) -> None:
    """Ask the pool's controller to drain every member and exit."""
    read_state(registry, pool_id)  # a one-line error for an unknown id
    registry.write_file(stop_path(registry, pool_id), b"stop\n")


def stop_requested(registry: Registry, pool_id: str) -> bool:
    """Whether `nerschat pool stop` (or `Pool.stop`) asked for it."""
    return stop_path(registry, pool_id).exists()


def write_progress(registry: Registry, pool_id: str, done: int, total: int | None) -> None:
    """Record how many items the workflow served by the pool has finished (of `total`)."""
    pool_dir(registry)
    payload = json.dumps({"done": done, "total": total, "at": time.time()}).encode()
    registry.write_file(progress_path(registry, pool_id), payload)


def read_progress(registry: Registry, pool_id: str) -> tuple[int, int | None] | None:
    """`(done, total)` as last written, None when nobody reported progress."""
    try:
        data = json.loads(progress_path(registry, pool_id).read_bytes())
        total = data.get("total")
        return int(data["done"]), (int(total) if total is not None else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def remove_files(registry: Registry, pool_id: str) -> None:
    """Remove the stop request (the state stays, as the pool's final record)."""
    with contextlib.suppress(FileNotFoundError):
        stop_path(registry, pool_id).unlink()


def exit_reason(registry: Registry, member_id: str, limit: int = 16384) -> str | None:
    """Why a member's pilot gave up, from the last line it wrote to its server log.

    None when the log has no such line (the pilot was killed, or never started).
    """
    from nerschat.pilot.pilot import GAVE_UP

    path = registry.log_dir / f"{member_id}.log"
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - limit))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    prefix = f"{GAVE_UP} {member_id}: "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip()[:300] or None if lines else None
