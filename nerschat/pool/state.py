"""A pool's state in the registry: `pools/<id>.json` (atomic, 0600), plus its stop request.

The controller writes the state every period; any process reads it (`nerschat pool status`)
and asks the controller to stop by writing `pools/<id>.stop` (`nerschat pool stop`).
Callers that know how far a workflow got write `pools/<id>.progress` ({done, total}); workflows
report their remaining items under `pools/workflows/` (`nerschat.pool.progress`).

These files follow the registry's rules for entries (`nerschat.registry`): a pool id is a plain
name (nothing outside `pools/` is ever opened, written or unlinked); `pools/` must be a real
directory that passes the registry's directory check; files are opened without following
links and without blocking, must be regular files below a size limit, and are trusted only
when owned by the user, by the directory's owner or (team registry) by its group; every field
is type-checked. A file that breaks a rule is a reported problem (`scan_states`), never a hang
or a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from nerschat.errors import UsageError
from nerschat.registry import (
    MAX_ENTRY_BYTES,
    DirectoryTrust,
    Registry,
    RegistryError,
    RegistryProblem,
    _integer,
    _number,
    _optional_number,
    _show,
    _text,
    check_directory,
    is_safe_name,
    read_trusted_file,
)
from nerschat.slurm import is_job_id

POOL_DIR = "pools"
MAX_STATE_BYTES = 4 * 1024 * 1024
"""A state is a few KB plus about 400 bytes per member that ever ran; a bigger file is refused."""
MAX_MEMBERS = 10_000
MAX_LIST = 10_000
MAX_NOTE_CHARS = 65_536
STATUSES = ("running", "stopping", "stopped")
# `unhealthy`: the engine stopped answering (the pilot may recover or restart it);
# `restarting`: the pilot restarts its engine in place after a death (entry back in `starting`).
# Neither is routed to; past the controller's `restart_grace` neither counts as serving.
Phase = Literal["pending", "starting", "ready", "unhealthy", "restarting", "draining", "gone"]
PHASES = ("pending", "starting", "ready", "unhealthy", "restarting", "draining", "gone")


class PoolNotFound(UsageError):
    """No pool of that id in the registry (or its state file is refused)."""


def check_pool_id(pool_id: object) -> str:
    """`pool_id` if it is a plain name; UsageError (one line) otherwise."""
    if not is_safe_name(pool_id):
        raise UsageError(f"{_show(pool_id)} is not a pool id (letters, digits, '.', '_', '-'; "
                         "see 'nerschat pool status')")
    assert isinstance(pool_id, str)
    return pool_id


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
        """Validate a decoded state file (every field's type); ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return _validate_state(data)




# -- validation ---------------------------------------------------------------------------


def _count(name: str, value: object) -> int:
    """A non-negative integer field."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"field {name!r}: not a non-negative integer ({_show(value)})")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"field {name!r}: not true or false ({_show(value)})")
    return value


def _items(name: str, value: object, limit: int = MAX_LIST) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"field {name!r}: not a list ({_show(value)})")
    if len(value) > limit:
        raise ValueError(f"field {name!r}: more than {limit} items")
    return value


def _object(name: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"field {name!r}: not a JSON object ({_show(value)})")
    return value


def _note(name: str, value: object) -> str:
    """Free text the controller wrote (reasons, events): any printable or not, escaped on output."""
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}: not a string ({_show(value)})")
    if len(value) > MAX_NOTE_CHARS:
        raise ValueError(f"field {name!r}: longer than {MAX_NOTE_CHARS} characters")
    return value


def _validate_member(where: str, data: object) -> Member:
    item = _object(where, data)
    for name in ("id", "job_id", "slurm", "submitted_at"):
        if name not in item:
            raise ValueError(f"field '{where}.{name}' missing")
    if not is_safe_name(item["id"]):
        raise ValueError(f"field '{where}.id': {_show(item['id'])} is not a plain name")
    slurm = _flag(f"{where}.slurm", item["slurm"])
    job_id = item["job_id"]
    if slurm and not is_job_id(job_id):
        raise ValueError(f"field '{where}.job_id': {_show(job_id)} is not a SLURM job id")
    _text(f"{where}.job_id", job_id, limit=64)
    phase = item.get("phase", "pending")
    if not isinstance(phase, str) or phase not in PHASES:
        raise ValueError(f"field '{where}.phase': {_show(phase)} is not one of {PHASES}")
    values: dict[str, Any] = {"id": item["id"], "job_id": job_id, "slurm": slurm,
                              "phase": phase,
                              "submitted_at": _number(f"{where}.submitted_at",
                                                      item["submitted_at"])}
    for name in ("started_at", "ready_at", "expires_at", "drain_at", "ended_at", "down_since"):
        values[name] = _optional_number(f"{where}.{name}", item.get(name))
    values["gpus"] = _count(f"{where}.gpus", item.get("gpus", 0))
    values["restarts"] = _count(f"{where}.restarts", item.get("restarts", 0))
    values["reason"] = _note(f"{where}.reason", item.get("reason", ""))
    return Member(**values)


def _validate_handover(where: str, data: object) -> Handover:
    item = _object(where, data)
    for name in ("old", "new"):
        if not is_safe_name(item.get(name)):
            raise ValueError(f"field '{where}.{name}': {_show(item.get(name))} is not a "
                             "plain name")
    return Handover(item["old"], item["new"],
                    _number(f"{where}.new_ready_at", item.get("new_ready_at")),
                    _number(f"{where}.old_drain_at", item.get("old_drain_at")),
                    _optional_number(f"{where}.old_time_left_s", item.get("old_time_left_s")))


def _validate_launch(data: object) -> dict[str, Any]:
    """The saved PoolSpec: scalars and lists of strings only (checked again on resume)."""
    launch = _object("launch", data)
    for key, value in launch.items():
        if isinstance(value, list):
            for item in value:
                _note(f"launch.{key}", item)
        elif value is not None and not isinstance(value, (str, int, float, bool)):
            raise ValueError(f"field 'launch.{key}': {_show(value)} is not a launch option")
        elif isinstance(value, float):
            _number(f"launch.{key}", value)
    return launch


def _validate_state(data: dict[str, Any]) -> PoolState:
    for name in ("id", "engine", "model", "min_replicas", "max_replicas", "desired",
                 "created_at"):
        if name not in data:
            raise ValueError(f"field {name!r} missing")
    if not is_safe_name(data["id"]):
        raise ValueError(f"field 'id': {_show(data['id'])} is not a plain name")
    low = _integer("min_replicas", data["min_replicas"])
    high = _integer("max_replicas", data["max_replicas"])
    if high < low:
        raise ValueError(f"field 'max_replicas': {high} is below min_replicas {low}")
    status = data.get("status", "running")
    if not isinstance(status, str) or status not in STATUSES:
        raise ValueError(f"field 'status': {_show(status)} is not one of {STATUSES}")
    timing = _object("timing", data.get("timing", {}))
    members = _items("members", data.get("members", []), MAX_MEMBERS)
    handovers = _items("handovers", data.get("handovers", []), MAX_MEMBERS)
    return PoolState(
        id=data["id"], engine=_text("engine", data["engine"], limit=64),
        model=_text("model", data["model"]), min_replicas=low, max_replicas=high,
        desired=_integer("desired", data["desired"]),
        created_at=_number("created_at", data["created_at"]),
        until=_optional_number("until", data.get("until")), status=status,
        controller_pid=_count("controller_pid", data.get("controller_pid", 0)),
        controller_host=_text("controller_host", data.get("controller_host", ""), limit=255,
                              empty=True),
        heartbeat_at=_number("heartbeat_at", data.get("heartbeat_at", 0.0)),
        lead_time_s=_number("lead_time_s", data.get("lead_time_s", 0.0)),
        lead_samples=[_number("lead_samples", v)
                      for v in _items("lead_samples", data.get("lead_samples", []))],
        members=[_validate_member(f"members[{i}]", m) for i, m in enumerate(members)],
        handovers=[_validate_handover(f"handovers[{i}]", h) for i, h in enumerate(handovers)],
        replaced_losses=_count("replaced_losses", data.get("replaced_losses", 0)),
        failed_starts=_count("failed_starts", data.get("failed_starts", 0)),
        error=_note("error", data.get("error", "")),
        events=[_note("events", v) for v in _items("events", data.get("events", []))],
        launch=_validate_launch(data.get("launch", {})),
        timing={str(k): _number(f"timing.{k}", v) for k, v in timing.items()},
        served_model=_text("served_model", data.get("served_model", ""), empty=True),
    )


# -- files ----------------------------------------------------------------------------------


def pools_trust(registry: Registry) -> DirectoryTrust | None:
    """The trust `<registry>/pools` gives its files; None when it (or the registry) is missing.

    RegistryError (one line) when the registry or `pools/` is refused: a link, not a
    directory, writable by others, someone else's (see `nerschat.registry.check_directory`).
    """
    if registry.check() is None:
        return None
    return subdirectory_trust(registry.path / POOL_DIR, "the pools directory")


def subdirectory_trust(path: Path, what: str) -> DirectoryTrust | None:
    """The trust a registry subdirectory `path` gives its files; None if it is missing.

    RegistryError (one line) for a link in its place (`what` names it in the message) or a
    directory `check_directory` refuses.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryError(f"cannot read {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise RegistryError(f"{path} is a symbolic link, not {what}: remove it")
    return check_directory(path, st)


def read_file(path: Path, trust: DirectoryTrust, limit: int = MAX_ENTRY_BYTES, *,
              tail: bool = False) -> tuple[bytes, os.stat_result]:
    """A pool file's bytes, read as the registry reads its entries (`read_trusted_file`)."""
    return read_trusted_file(path, trust, limit, tail=tail, what="pool file")


def read_json(path: Path, trust: DirectoryTrust, limit: int = MAX_ENTRY_BYTES
              ) -> tuple[Any, os.stat_result]:
    """`read_file`, decoded as JSON; ValueError with the reason."""
    raw, st = read_file(path, trust, limit)
    try:
        return json.loads(raw), st
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({getattr(exc, 'msg', 'too deeply nested')})") from None


def pool_dir(registry: Registry) -> Path:
    """`<registry>/pools`, created with the registry's directory mode; refused if unsafe."""
    path = registry.path / POOL_DIR
    registry.ensure()
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, registry.dir_mode)
    pools_trust(registry)  # a link, a file, someone else's directory: RegistryError
    return path


def state_path(registry: Registry, pool_id: str) -> Path:
    """Where a pool's state lives; UsageError if `pool_id` is not a plain name."""
    return registry.path / POOL_DIR / f"{check_pool_id(pool_id)}.json"


def stop_path(registry: Registry, pool_id: str) -> Path:
    """The file whose existence asks a pool's controller to stop."""
    return registry.path / POOL_DIR / f"{check_pool_id(pool_id)}.stop"


def progress_path(registry: Registry, pool_id: str) -> Path:
    """`{done, total}` items of the workflow a pool serves, written by the workflow."""
    return registry.path / POOL_DIR / f"{check_pool_id(pool_id)}.progress"


def write_state(registry: Registry, state: PoolState) -> None:
    """Replace the state file atomically (registry file mode, 0600 unless shared).

    ValueError if the state is not one readers would accept.
    """
    data = state.to_dict()
    PoolState.from_dict(json.loads(json.dumps(data)))  # never write what readers refuse
    payload = json.dumps(data, indent=1, sort_keys=True).encode()
    target = state_path(registry, state.id)
    pool_dir(registry)
    registry.write_file(target, payload)


def _parse_state(path: Path, trust: DirectoryTrust) -> tuple[PoolState, os.stat_result]:
    data, st = read_json(path, trust, MAX_STATE_BYTES)
    state = PoolState.from_dict(data)
    if f"{state.id}.json" != path.name:
        raise ValueError(f"field 'id': {_show(state.id)} does not match the file name")
    return state, st


def read_state_file(registry: Registry, pool_id: str) -> tuple[PoolState, os.stat_result]:
    """A pool's state and its file's stat.

    PoolNotFound (one line, with the path) if absent, refused or invalid.
    """
    path = state_path(registry, pool_id)
    trust = pools_trust(registry)
    try:
        if trust is None:
            raise FileNotFoundError(errno.ENOENT, "no pools directory", str(path.parent))
        return _parse_state(path, trust)
    except FileNotFoundError:
        raise PoolNotFound(f"no pool {pool_id!r} in {path.parent}: see 'nerschat pool "
                           "status' for the pools there") from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PoolNotFound(f"{path}: not a pool state ({reason}); remove it if no pool "
                           "runs under that id") from None


def read_state(registry: Registry, pool_id: str) -> PoolState:
    """A pool's state; PoolNotFound (one line, with the path) if absent, refused or invalid."""
    return read_state_file(registry, pool_id)[0]


@dataclass
class PoolScan:
    """The valid pool states (oldest first) and the files in `pools/` that are not."""

    states: list[PoolState]
    problems: list[RegistryProblem]


def scan_states(registry: Registry) -> PoolScan:
    """Every valid, trusted pool state in the registry, plus the files that are not.

    Never raises for a bad file; RegistryError if the registry or `pools/` is refused.
    """
    trust = pools_trust(registry)
    if trust is None:
        return PoolScan([], [])
    directory = registry.path / POOL_DIR
    states, problems = [], []
    try:
        with os.scandir(directory) as listing:
            names = sorted(d.name for d in listing
                           if d.name.endswith(".json") and not d.name.startswith("."))
    except FileNotFoundError:
        names = []
    except OSError as exc:
        raise RegistryError(f"cannot read {directory}: {exc.strerror}") from None
    for name in names:
        path = directory / name
        try:
            states.append(_parse_state(path, trust)[0])
        except FileNotFoundError:
            continue  # removed since the listing
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problems.append(RegistryProblem(path, reason or "unreadable"))
    return PoolScan(sorted(states, key=lambda s: s.created_at), problems)


def list_states(registry: Registry) -> list[PoolState]:
    """Every valid pool state in the registry, oldest first (files with problems skipped)."""
    return scan_states(registry).states


def request_stop(registry: Registry, pool_id: str) -> None:
    """Ask the pool's controller to drain every member and exit."""
    read_state(registry, pool_id)  # a one-line error for an unknown id
    registry.write_file(stop_path(registry, pool_id), b"stop\n")


def stop_requested(registry: Registry, pool_id: str) -> bool:
    """Whether a trusted `pools/<id>.stop` exists (one lstat; a link or a FIFO is not one)."""
    try:
        st = os.lstat(stop_path(registry, pool_id))
        trust = pools_trust(registry)
    except (OSError, RegistryError):
        return False
    return (stat.S_ISREG(st.st_mode) and trust is not None
            and trust.entry_problem(st) is None)


def write_progress(registry: Registry, pool_id: str, done: int, total: int | None) -> None:
    """Record how many items the workflow served by the pool has finished (of `total`)."""
    target = progress_path(registry, pool_id)
    pool_dir(registry)
    payload = json.dumps({"done": done, "total": total, "at": time.time()}).encode()
    registry.write_file(target, payload)


def read_progress(registry: Registry, pool_id: str) -> tuple[int, int | None] | None:
    """`(done, total)` as last written.

    None when nobody reported progress, or the file is refused or invalid.
    """
    try:
        trust = pools_trust(registry)
        if trust is None:
            return None
        data, _ = read_json(progress_path(registry, pool_id), trust)
        item = _object("progress", data)
        total = item.get("total")
        return (_count("done", item.get("done")),
                None if total is None else _count("total", total))
    except (OSError, ValueError, RegistryError):
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

    if not is_safe_name(member_id):
        return None
    path = registry.log_dir / f"{member_id}.log"
    try:
        checked = registry.check()
        if checked is None:
            return None
        raw, _ = read_file(path, checked[1], limit, tail=True)
    except (OSError, ValueError, RegistryError):
        return None
    text = raw.decode("utf-8", "replace")
    prefix = f"{GAVE_UP} {member_id}: "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return lines[-1][len(prefix):].strip()[:300] or None if lines else None
