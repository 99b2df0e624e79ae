"""The endpoint registry: one JSON file per running server on a shared file system.

Pilots write, clients read; nothing else is shared between them. Writes are atomic
(temporary file in the same directory, fsync, rename) so a reader on any node sees either
the old entry or the new one, never half a file. The directory holds API keys, so it is
private (0700/0600) unless a team opts into the group-shared mode (0750/0640).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from nerschat.errors import UsageError

SCHEMA_VERSION = 1
KINDS = ("llm", "embedding")
# `pending`: a job `nerschat launch` submitted that has not started its pilot yet; it has no
# URL, its `slurm_job_id` names the job, and the pilot's own entry (same id) replaces it.
STATES = ("pending", "starting", "ready", "draining")
Kind = Literal["llm", "embedding"]
State = Literal["pending", "starting", "ready", "draining"]

ENTRY_SUFFIX = ".json"
STOP_SUFFIX = ".stop"


class RegistryError(UsageError):
    """A registry that cannot be used at all (missing permissions, not a directory)."""


def default_registry_path() -> Path:
    """`NERSCHAT_REGISTRY`, else `~/.nerschat/registry`."""
    env = os.environ.get("NERSCHAT_REGISTRY")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".nerschat" / "registry"


@dataclass
class Endpoint:
    """One server as published by its pilot."""

    id: str
    kind: Kind
    engine: str
    model: str
    url: str
    state: State
    api_key: str | None
    pid: int
    host: str
    slurm_job_id: str | None
    heartbeat_at: float
    ttl: float
    expires_at: float | None = None
    started_at: float = 0.0
    ready_at: float | None = None
    gpus: str | None = None
    capacity: int | None = None
    max_model_len: int | None = None
    log_path: str | None = None
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def is_stale(self, now: float | None = None) -> bool:
        """A heartbeat older than the ttl means the pilot is gone (or hung)."""
        now = time.time() if now is None else now
        return now - self.heartbeat_at > self.ttl

    def is_usable(self, now: float | None = None) -> bool:
        return self.state == "ready" and not self.is_stale(now)

    def status(self, now: float | None = None) -> str:
        """`stale` overrides the recorded state: nothing routes to a dead pilot."""
        return "stale" if self.is_stale(now) else self.state

    def time_left(self, now: float | None = None) -> float | None:
        if self.expires_at is None:
            return None
        now = time.time() if now is None else now
        return self.expires_at - now

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """The entry without its secret, for listings and logs."""
        data = self.to_dict()
        data["api_key"] = "***" if self.api_key else None
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Endpoint:
        """Validate a decoded entry; raise ValueError naming the offending field."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"field 'schema': expected {SCHEMA_VERSION}, got {data.get('schema')!r}")
        known = {f.name for f in fields(cls)}
        for name in ("id", "kind", "engine", "model", "url", "state", "pid", "host",
                     "heartbeat_at", "ttl"):
            if name not in data:
                raise ValueError(f"field {name!r} missing")
        if data["kind"] not in KINDS:
            raise ValueError(f"field 'kind': {data['kind']!r} is not one of {KINDS}")
        if data["state"] not in STATES:
            raise ValueError(f"field 'state': {data['state']!r} is not one of {STATES}")
        if data["state"] == "pending" and data["url"] == "":
            pass  # a queued job has no server yet
        elif not isinstance(data["url"], str) or not data["url"].rstrip("/").endswith("/v1"):
            raise ValueError(f"field 'url': {data['url']!r} does not end in /v1")
        for name in ("heartbeat_at", "ttl"):
            if not isinstance(data[name], (int, float)):
                raise ValueError(f"field {name!r}: not a number")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RegistryProblem:
    """A file in the registry directory that is not a valid entry."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class RegistryScan:
    entries: list[Endpoint]
    problems: list[RegistryProblem]


class Registry:
    """A directory of endpoint entries.

    `scans` counts directory listings, so callers (and tests) can check that a client does
    not list a directory on a parallel file system for every request.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, shared: bool = False):
        self.path = Path(path).expanduser() if path is not None else default_registry_path()
        self.shared = shared
        self.scans = 0

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r}, shared={self.shared})"

    @property
    def dir_mode(self) -> int:
        return 0o750 if self.shared else 0o700

    @property
    def file_mode(self) -> int:
        return 0o640 if self.shared else 0o600

    @property
    def log_dir(self) -> Path:
        return self.path / "logs"

    def ensure(self) -> None:
        """Create the directory (and its log directory) with the right mode."""
        for directory in (self.path, self.log_dir):
            try:
                directory.mkdir(mode=self.dir_mode, parents=True, exist_ok=True)
            except OSError as exc:
                raise RegistryError(f"cannot create registry directory {directory}: {exc}") from exc
            if not directory.is_dir():
                raise RegistryError(f"registry path {directory} is not a directory")
            with contextlib.suppress(PermissionError):
                os.chmod(directory, self.dir_mode)

    def entry_path(self, endpoint_id: str) -> Path:
        return self.path / f"{endpoint_id}{ENTRY_SUFFIX}"

    def stop_path(self, endpoint_id: str) -> Path:
        return self.path / f"{endpoint_id}{STOP_SUFFIX}"

    # -- writing (pilots) -------------------------------------------------------------

    def _write_atomic(self, target: Path, payload: bytes) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.path)
        try:
            os.fchmod(fd, self.file_mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def write_file(self, target: Path, payload: bytes) -> None:
        """Write a file under the registry atomically with the registry's file mode.

        For records that are not endpoint entries (e.g. `pools/<id>.json`); `target` must be
        inside the registry directory (same file system, so the rename is atomic).
        """
        self._write_atomic(target, payload)

    def publish(self, endpoint: Endpoint) -> None:
        """Write (or replace) an entry atomically."""
        self.ensure()
        payload = json.dumps(endpoint.to_dict(), indent=1, sort_keys=True).encode()
        self._write_atomic(self.entry_path(endpoint.id), payload)

    def remove(self, endpoint_id: str) -> None:
        for path in (self.entry_path(endpoint_id), self.stop_path(endpoint_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def request_stop(self, endpoint_id: str) -> None:
        """Ask a pilot to drain; Parsl cannot cancel a running app, so pilots poll for this."""
        self.ensure()
        self._write_atomic(self.stop_path(endpoint_id), b"stop\n")

    def stop_requested(self, endpoint_id: str) -> bool:
        return self.stop_path(endpoint_id).exists()

    # -- reading (clients) ------------------------------------------------------------

    def _entry_files(self) -> Iterator[Path]:
        self.scans += 1
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return
        except NotADirectoryError as exc:
            raise RegistryError(f"registry path {self.path} is not a directory") from exc
        except PermissionError as exc:
            raise RegistryError(f"cannot read registry {self.path}: {exc}") from exc
        for name in sorted(names):
            if name.endswith(ENTRY_SUFFIX) and not name.startswith("."):
                yield self.path / name

    def read(self, path: Path) -> Endpoint:
        """Read one entry file; raise ValueError (or OSError) if it is not one."""
        with open(path, "rb") as handle:
            raw = handle.read(1 << 20)
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise ValueError(f"not UTF-8 text ({exc.reason})") from exc
        return Endpoint.from_dict(data)

    def scan(self) -> RegistryScan:
        """Every valid entry, plus a list of the files that are not (never raises for those)."""
        entries: list[Endpoint] = []
        problems: list[RegistryProblem] = []
        for path in self._entry_files():
            try:
                entries.append(self.read(path))
            except FileNotFoundError:
                continue  # removed between listing and reading
            except (OSError, ValueError, TypeError) as exc:
                problems.append(RegistryProblem(path, str(exc)))
        return RegistryScan(entries, problems)

    def get(self, endpoint_id: str) -> Endpoint | None:
        try:
            return self.read(self.entry_path(endpoint_id))
        except (FileNotFoundError, ValueError):
            return None

    def endpoints(
        self,
        model: str | None = None,
        kind: str | None = None,
        *,
        include_unusable: bool = False,
    ) -> list[Endpoint]:
        """Entries matching a model and/or kind; by default only ready, fresh ones."""
        now = time.time()
        return [
            e
            for e in self.scan().entries
            if (model is None or e.model == model)
            and (kind is None or e.kind == kind)
            and (include_unusable or e.is_usable(now))
        ]

    def prune(self) -> list[Endpoint]:
        """Remove stale entries (dead pilots); return what was removed."""
        removed = []
        now = time.time()
        for entry in self.scan().entries:
            if entry.is_stale(now):
                self.remove(entry.id)
                removed.append(entry)
        return removed
