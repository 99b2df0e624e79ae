"""The endpoint registry: one JSON file per running server on a shared file system.

Pilots write, clients read; nothing else is shared between them. Writes are atomic
(temporary file in the same directory, fsync, rename) so a reader on any node sees either
the old entry or the new one, never half a file, and `cat` shows a whole entry.

Nothing in the directory is trusted (see README, "Security"):

- the file name is an entry's only identity: an `id` that is not a plain name or does not
  match its file name makes the entry a reported problem, and nothing outside the directory
  is ever opened or unlinked;
- the directory must be the user's own and not writable by others, or a team directory
  (setgid, group = one of the user's groups, not world-writable); entries are trusted only
  when owned by the user, by the directory's owner, or (team directory) by its group;
- files are opened without following links and without blocking (FIFOs, devices, huge files
  are problems, not hangs); every field is type-checked; control characters and markup in
  fields, a heartbeat from the future and URLs outside the cluster are problems.

Cost on a parallel file system: a heartbeat renews the entry's modification time in place
(no rename, so the directory does not change); a `RegistryView` stats the directory once per
refresh and re-reads only entries whose inode changed. Liveness of cached entries comes from
directory changes (pilots flip state by rename and remove their entry when they stop), from
re-checks the caller asks for after a failure, and from the heartbeat seen when last read.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import grp
import ipaddress
import json
import math
import os
import pwd
import re
import socket
import stat
import tempfile
import threading
import time
import unicodedata
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from nerschat.errors import UsageError
from nerschat.slurm import job_id_problem

SCHEMA_VERSION = 2
"""Written by this version. 2: the heartbeat is the file's mtime (max with `heartbeat_at`)."""
READABLE_SCHEMAS = (1, 2)
MODEL_KINDS = ("llm", "embedding")
KINDS = (*MODEL_KINDS, "router")  # a router fronts the model servers; nothing routes to it
# `pending`: a job `nerschat launch` submitted that has not started its pilot yet; it has no
# URL, its `slurm_job_id` names the job, and the pilot's own entry (same id) replaces it.
# `unhealthy`: the server stopped answering its health probe (the pilot may recover it).
STATES = ("pending", "starting", "ready", "draining", "unhealthy")
Kind = Literal["llm", "embedding", "router"]
State = Literal["pending", "starting", "ready", "draining", "unhealthy"]

ENTRY_SUFFIX = ".json"
STOP_SUFFIX = ".stop"
MAX_ENTRY_BYTES = 64 * 1024
"""Entries are about 1 KB; a bigger file is a problem and is not read."""
MAX_TTL = 30 * 86400.0
"""Pilots use seconds to minutes; a `pending` entry (a queued job) stands for days."""
MAX_COUNT = 1_000_000
"""Upper bound of count fields (`capacity`, `max_batch_size`): far beyond any engine's."""
MAX_TOKENS = 1 << 30
"""Upper bound of token fields (`max_model_len`, `max_batch_tokens`, `max_input_tokens`)."""
MAX_PID = 1 << 30
MAX_EXTRA_KEYS = 64
APIS = ("openai", "tei")
"""API dialects an entry can declare: `openai` (/v1/*), `tei` (/embed)."""
LOAD_METRIC_KEYS = ("running", "waiting")
"""What `load_metrics` may name: the gauges of requests running and waiting (`waiting` required)."""
PROMETHEUS_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,199}")
"""A Prometheus metric name (the exposition format's rule, at most 200 characters)."""
MAX_SKEW = 3600.0
"""A heartbeat ahead of this machine's clock by more than min(ttl, MAX_SKEW) is refused."""
ALLOWED_HOSTS_ENV = "NERSCHAT_ALLOWED_HOSTS"
"""Comma-separated host patterns (fnmatch, e.g. `nid*,*.chn.perlmutter.nersc.gov`)."""
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SETTLE_SECONDS = 1.0
"""A directory listed less than this after its mtime is listed again (coarse mtimes)."""
RECHECK_GAP = 1.0
QUIET_AFTER = 10.0
"""A directory unchanged for this long is checked at most every `QUIET_CHECK_GAP` seconds."""
QUIET_CHECK_GAP = 3.0
STALE_RECHECK_FIRST = 5.0
STALE_RECHECK_MAX = 300.0


class RegistryError(UsageError):
    """A registry that cannot be used at all (refused directory, missing permissions)."""


def default_registry_path() -> Path:
    """`NERSCHAT_REGISTRY`, else `~/.nerschat/registry`."""
    env = os.environ.get("NERSCHAT_REGISTRY")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".nerschat" / "registry"


def is_safe_name(name: object) -> bool:
    """A plain file-name stem: letters, digits, `.`, `_`, `-`, not starting with `.`/`-`."""
    return isinstance(name, str) and SAFE_NAME.fullmatch(name) is not None


def check_id(endpoint_id: str) -> str:
    """`endpoint_id` if it is a plain name; RegistryError (one line) otherwise."""
    if not is_safe_name(endpoint_id):
        raise RegistryError(f"{_show(endpoint_id)} is not an endpoint id (letters, digits, "
                            f"'.', '_', '-'; see 'nerschat ls')")
    return endpoint_id


def _show(value: object, limit: int = 60) -> str:
    """A value from an untrusted file as a short, escaped, printable string."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _user(uid: int) -> str:
    with contextlib.suppress(KeyError):
        return f"user {pwd.getpwuid(uid).pw_name}"
    return f"uid {uid}"


def _group(gid: int) -> str:
    with contextlib.suppress(KeyError):
        return grp.getgrgid(gid).gr_name
    return str(gid)


# -- field validation -----------------------------------------------------------------

_BAD_CATEGORIES = ("Cc", "Cf", "Cs", "Co")
_IPV6_HOST = re.compile(r"^https?://\[[0-9A-Fa-f:.]+\]")


def _text(name: str, value: object, *, limit: int = 512, markup: bool = False,
          empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"field {name!r}: not a string ({type(value).__name__})")
    if len(value) > limit:
        raise ValueError(f"field {name!r}: longer than {limit} characters")
    if not value and not empty:
        raise ValueError(f"field {name!r}: empty")
    for ch in value:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            raise ValueError(f"field {name!r}: control character {ch!r} in {_show(value)}")
    if not markup and ("[" in value or "]" in value):
        raise ValueError(f"field {name!r}: brackets (terminal markup) in {_show(value)}")
    return value


def _optional_text(name: str, value: object, **kwargs: Any) -> str | None:
    return None if value is None else _text(name, value, **kwargs)


def _number(name: str, value: object, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"field {name!r}: not a number ({_show(value)})")
    if not math.isfinite(value):
        raise ValueError(f"field {name!r}: not a finite number")
    if positive and value <= 0:
        raise ValueError(f"field {name!r}: must be positive, got {value}")
    return float(value)


def _optional_number(name: str, value: object) -> float | None:
    return None if value is None else _number(name, value)


def _integer(name: str, value: object, *, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"field {name!r}: not an integer ({_show(value)})")
    if value <= 0:
        raise ValueError(f"field {name!r}: must be positive, got {value}")
    if value > maximum:
        raise ValueError(f"field {name!r}: {value} is more than {maximum}")
    return value


def _optional_integer(name: str, value: object, **kwargs: Any) -> int | None:
    return None if value is None else _integer(name, value, **kwargs)


def url_host(url: str, name: str = "url", *, path_suffix: str | None = "/v1") -> str:
    """The host of an entry's URL, lower case, without IPv6 brackets; ValueError if unusable.

    `name` is the field the URL comes from (for the message); the path must end in
    `path_suffix` unless that is None.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"field {name!r}: scheme {parts.scheme!r} is not http or https")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"field {name!r}: user or password in the URL")
    if parts.query or parts.fragment:
        raise ValueError(f"field {name!r}: query or fragment in the URL")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"field {name!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"field {name!r}: no host")
    if path_suffix is not None and not parts.path.rstrip("/").endswith(path_suffix):
        raise ValueError(f"field {name!r}: {_show(url)} does not end in {path_suffix}")
    return parts.hostname.lower()


def _url_text(name: str, value: object, *, empty: bool = False) -> str:
    text = _text(name, value, limit=2048, markup=True, empty=empty)
    outside_host = _IPV6_HOST.sub("", text, count=1)
    if "[" in outside_host or "]" in outside_host:
        raise ValueError(f"field {name!r}: brackets (terminal markup) in {_show(text)}")
    return text


def _check_extra(value: object) -> None:
    """`extra`: a flat JSON object of plain-name keys and short strings, numbers, booleans."""
    if not isinstance(value, dict):
        raise ValueError(f"field 'extra': not a JSON object ({_show(value)})")
    if len(value) > MAX_EXTRA_KEYS:
        raise ValueError(f"field 'extra': more than {MAX_EXTRA_KEYS} keys")
    for key, item in value.items():
        if not is_safe_name(key):
            raise ValueError(f"field 'extra': key {_show(key)} is not a plain name")
        name = f"extra.{key}"
        if key == "group":  # pilots launched together: their shared stop request's name
            _text(name, item, limit=128)
        elif isinstance(item, str):
            _text(name, item, limit=MAX_ENTRY_BYTES, markup=True, empty=True)
        elif isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"field {name!r}: not a finite number")
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise ValueError(f"field {name!r}: not a string, number or boolean "
                             f"({type(item).__name__})")


def _check_pid(name: str, value: object) -> None:
    # 0: no process yet (a `pending` entry)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_PID:
        raise ValueError(f"field {name!r}: not a process id ({_show(value)})")


def _check_api_key(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value or len(value) > 4096
                              or not all(" " < ch < "\x7f" for ch in value)):
        raise ValueError(f"field {name!r}: not a string of printable ASCII")


def _check_job_id(name: str, value: object) -> None:
    if value is None:
        return
    _text(name, value, limit=64)
    problem = job_id_problem(value)
    if problem:
        raise ValueError(f"field {name!r}: {problem}")


def _check_api(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or value not in APIS):
        raise ValueError(f"field {name!r}: {_show(value)} is not one of {APIS}")


def _check_ttl(name: str, value: object) -> None:
    ttl = _number(name, value, positive=True)
    if ttl > MAX_TTL:
        raise ValueError(f"field {name!r}: {ttl:.0f} s is more than {MAX_TTL:.0f} s")


def _check_time(name: str, value: object) -> None:
    if _number(name, value) < 0:
        raise ValueError(f"field {name!r}: negative time {value}")


def _optional_time(name: str, value: object) -> None:
    if value is not None:
        _check_time(name, value)


def _check_metrics_url(name: str, value: object) -> None:
    if value is not None:
        url_host(_url_text(name, value), name, path_suffix=None)


def _check_load_metrics(name: str, value: object) -> None:
    """`load_metrics`: {"waiting": NAME} or {"running": NAME, "waiting": NAME}, Prometheus names."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise ValueError(f"field {name!r}: not a JSON object ({_show(value)})")
    for key, metric in value.items():
        if key not in LOAD_METRIC_KEYS:
            raise ValueError(f"field {name!r}: key {_show(key)} is not one of {LOAD_METRIC_KEYS}")
        if not isinstance(metric, str) or PROMETHEUS_NAME.fullmatch(metric) is None:
            raise ValueError(f"field '{name}.{key}': {_show(metric)} is not a Prometheus "
                             "metric name")
    if "waiting" not in value:
        raise ValueError(f"field {name!r}: no 'waiting' metric named")


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(name: str, value: object) -> None:
        if not isinstance(value, str) or value not in choices:
            raise ValueError(f"field {name!r}: {_show(value)} is not one of {choices}")
    return check


def _check_schema(name: str, value: object) -> None:
    if value not in READABLE_SCHEMAS or isinstance(value, bool):
        raise ValueError(f"field {name!r}: expected one of {READABLE_SCHEMAS}, got "
                         f"{_show(value)}")


def _check_id(name: str, value: object) -> None:
    if not is_safe_name(value):
        raise ValueError(f"field {name!r}: {_show(value)} is not a plain name")


REQUIRED_FIELDS = ("id", "kind", "engine", "model", "url", "state", "pid", "host",
                   "heartbeat_at", "ttl")
# One check per Endpoint field (a test walks them all: a field without a check fails it).
# Each takes (field name, value) and raises ValueError naming the field; `url` (which depends
# on `state`) is checked in `_validate_fields`.
_FIELD_CHECKS: dict[str, Any] = {
    "schema": _check_schema,
    "id": _check_id,
    "kind": _one_of(KINDS),
    "state": _one_of(STATES),
    "engine": lambda n, v: _text(n, v, limit=64),
    "model": lambda n, v: _text(n, v),
    "url": lambda n, v: _url_text(n, v, empty=True),
    "host": lambda n, v: _text(n, v, limit=255),
    "api_key": _check_api_key,
    "pid": _check_pid,
    "slurm_job_id": _check_job_id,
    "heartbeat_at": _check_time,
    "ttl": _check_ttl,
    "expires_at": _optional_time,
    "started_at": _check_time,
    "ready_at": _optional_time,
    "gpus": lambda n, v: _optional_text(n, v, limit=256),
    "capacity": lambda n, v: _optional_integer(n, v),
    "max_model_len": lambda n, v: _optional_integer(n, v, maximum=MAX_TOKENS),
    "log_path": lambda n, v: _optional_text(n, v, limit=4096, markup=True),
    "api": _check_api,
    "max_batch_size": lambda n, v: _optional_integer(n, v),
    "max_batch_tokens": lambda n, v: _optional_integer(n, v, maximum=MAX_TOKENS),
    "max_input_tokens": lambda n, v: _optional_integer(n, v, maximum=MAX_TOKENS),
    "metrics_url": _check_metrics_url,
    "load_metrics": _check_load_metrics,
    "extra": lambda _n, v: _check_extra(v),
}


def _validate_fields(data: dict[str, Any]) -> dict[str, Any]:
    """Type-check every known field of a decoded entry; return the known ones."""
    _check_schema("schema", data.get("schema"))
    for name in REQUIRED_FIELDS:
        if name not in data:
            raise ValueError(f"field {name!r} missing")
    known = {f.name for f in fields(Endpoint) if f.init and f.name != "observed_at"}
    for name, check in _FIELD_CHECKS.items():
        if name in data:
            check(name, data[name])
    pending = data["state"] == "pending"  # a queued job: no server (url "", pid 0) yet
    if data["url"] or not pending:
        url_host(data["url"])
    return {k: v for k, v in data.items() if k in known}


@dataclass
class Endpoint:
    """One server as published by its pilot.

    Times are epoch seconds; `ttl` is seconds. `api_key` never appears in `repr()`.
    `observed_at` (not written to the file) is when this process last looked at the
    entry's heartbeat: staleness is judged as of then (None: as of now).
    """

    id: str
    kind: Kind
    engine: str
    model: str
    url: str
    state: State
    api_key: str | None = field(repr=False)
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
    # What clients need to batch requests, filled by the pilot from the engine itself
    # (nerschat.pilot.describe): API dialect ("openai": /v1/*, "tei": /embed), texts per
    # request, tokens per request, tokens per text, and where the Prometheus metrics are.
    api: str | None = None
    max_batch_size: int | None = None
    max_batch_tokens: int | None = None
    max_input_tokens: int | None = None
    metrics_url: str | None = None
    # Which of the engine's metrics at `metrics_url` are its gauges of requests running and
    # waiting ({"running": NAME, "waiting": NAME}; "running" may be absent); None: unknown.
    load_metrics: dict[str, str] | None = None
    schema: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    observed_at: float | None = field(default=None, repr=False, compare=False)

    def is_stale(self, now: float | None = None) -> bool:
        """A heartbeat older than the ttl (as of the last look) means the pilot is gone."""
        now = time.time() if now is None else now
        if self.observed_at is not None:
            now = min(now, self.observed_at)
        return now - self.heartbeat_at > self.ttl

    def is_expired(self, now: float | None = None) -> bool:
        """The walltime end (`expires_at`) has passed: SLURM has ended (or is ending) the job."""
        if self.expires_at is None:
            return False
        now = time.time() if now is None else now
        return now >= self.expires_at

    def is_usable(self, now: float | None = None) -> bool:
        """Ready, not stale nor past its walltime, and a model server.

        (A `router` entry never takes model traffic.)
        """
        return (self.state == "ready" and self.kind in MODEL_KINDS and not self.is_stale(now)
                and not self.is_expired(now))

    def status(self, now: float | None = None) -> str:
        """`stale` (dead heartbeat) and `expired` (walltime over) override the recorded state.

        Nothing routes to either.
        """
        if self.is_stale(now):
            return "stale"
        return "expired" if self.is_expired(now) else self.state

    def time_left(self, now: float | None = None) -> float | None:
        """Seconds until the SLURM walltime ends (None: no end known)."""
        if self.expires_at is None:
            return None
        now = time.time() if now is None else now
        return self.expires_at - now

    def to_dict(self) -> dict[str, Any]:
        """The entry as written to its file (with the key)."""
        data = asdict(self)
        del data["observed_at"]
        return data

    def public_dict(self) -> dict[str, Any]:
        """The entry without its secret, for listings and logs."""
        data = self.to_dict()
        data["api_key"] = "***" if self.api_key else None
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Endpoint:
        """Validate a decoded entry (every field's type); ValueError naming the field."""
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return cls(**_validate_fields(data))


# -- hosts ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _local_names() -> tuple[str, ...]:
    names = {socket.gethostname().lower()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn().lower())
    return tuple(sorted(n for n in names if n))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def allowed_host_patterns(value: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Host patterns from `value`, else `$NERSCHAT_ALLOWED_HOSTS` (empty: the default rule)."""
    if value is None:
        value = os.environ.get(ALLOWED_HOSTS_ENV, "")
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(p.strip().lower() for p in items if p.strip())


def host_problem(url: str, patterns: Sequence[str] = (), name: str = "url") -> str | None:
    """Why an entry's URL host is not a cluster host, or None if it is.

    Loopback and this machine's names are always allowed; otherwise the URL host must match
    `patterns`, or with no patterns the default rule: a single-label name (`nid001234`), a
    name in this machine's domain, or a private address. `name` is the entry field the URL
    comes from (`url` must end in /v1, `metrics_url` need not).
    """
    try:
        target = url_host(url, name, path_suffix="/v1" if name == "url" else None)
    except ValueError as exc:
        return str(exc)
    if _is_loopback(target):
        return None
    local = _local_names()
    if target in local:
        return None
    if patterns:
        if any(fnmatch.fnmatchcase(target, p) for p in patterns):
            return None
    else:
        try:
            address = ipaddress.ip_address(target)
        except ValueError:
            domains = {name.split(".", 1)[1] for name in local if "." in name}
            if "." not in target or any(target.endswith("." + d) for d in domains):
                return None
        else:
            if address.is_private and not address.is_unspecified:
                return None
    where = "URL host" if name == "url" else f"{name} host"
    return (f"{where} {_show(target)} is not a cluster host (allow it with "
            f"{ALLOWED_HOSTS_ENV}=PATTERN,...)")


# -- directory trust ------------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryTrust:
    """Who may have written entries in a registry directory that passed the checks."""

    uid: int
    gid: int
    team: bool

    def entry_problem(self, st: os.stat_result) -> str | None:
        """Why an entry file with this stat is not trusted, or None."""
        if st.st_mode & stat.S_IWOTH:
            return "writable by every user"
        if st.st_uid in (os.geteuid(), self.uid):
            return None
        if self.team and st.st_gid == self.gid:
            return None
        where = (f"group {_group(st.st_gid)}, not the team group {_group(self.gid)}"
                 if self.team else "a private registry trusts only your own entries")
        return f"owned by {_user(st.st_uid)} ({where}); ignored"


def check_directory(path: Path, st: os.stat_result) -> DirectoryTrust:
    """The trust a registry directory gives; RegistryError naming the fix if it is unsafe."""
    if not stat.S_ISDIR(st.st_mode):
        raise RegistryError(f"registry path {path} is not a directory")
    mode = stat.S_IMODE(st.st_mode)
    team_fix = f"chgrp TEAM {path} && chmod 2770 {path}"
    if mode & stat.S_IWOTH:
        raise RegistryError(f"registry {path} is writable by every user (mode {mode:o}), so "
                            f"anyone could plant endpoints: chmod o-w {path} (for a team: "
                            f"{team_fix})")
    team = bool(mode & stat.S_ISGID)
    if st.st_uid != os.geteuid():
        if not team:
            raise RegistryError(
                f"registry {path} belongs to {_user(st.st_uid)}, not you: use your own "
                f"(--registry DIR or $NERSCHAT_REGISTRY), or have its owner make it a team "
                f"registry ({team_fix})")
        if st.st_gid not in {os.getegid(), *os.getgroups()}:
            raise RegistryError(f"registry {path} is a team registry of group "
                                f"{_group(st.st_gid)}, which you are not in: use your own "
                                f"(--registry DIR)")
    elif mode & stat.S_IWGRP and not team:
        raise RegistryError(f"registry {path} is group-writable but not a team registry: "
                            f"chmod g-w {path}, or chmod g+s {path} to share it with group "
                            f"{_group(st.st_gid)}")
    return DirectoryTrust(st.st_uid, st.st_gid, team)


# -- problems and scans ---------------------------------------------------------------


@dataclass(frozen=True)
class RegistryProblem:
    """A file in the registry directory that is not a valid, trusted entry."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class RegistryScan:
    """Valid entries (sorted by file name) and the files that are not."""

    entries: list[Endpoint]
    problems: list[RegistryProblem]


_OPEN_FLAGS = (os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0))


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def read_trusted_file(path: Path, trust: DirectoryTrust, limit: int = MAX_ENTRY_BYTES, *,
                      tail: bool = False, what: str = "entry") -> tuple[bytes, os.stat_result]:
    """(bytes, stat) of a trusted regular file of at most `limit` bytes (`tail`: its last).

    Never follows a link and never blocks (FIFOs and devices are refused unread); `what` names
    the kind of file in the reasons ("entry", "pool file"). ValueError with the reason for a
    file that breaks a rule; OSError (e.g. FileNotFoundError) if it cannot be opened.
    """
    article = "an" if what[0] in "aeiou" else "a"
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"a symbolic link ({article} {what} is a plain file)") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{_file_kind(st.st_mode)}, not {article} {what}")
        if st.st_size > limit and not tail:
            raise ValueError(f"{st.st_size} bytes, more than {article} {what}'s {limit}; "
                             "not read")
        problem = trust.entry_problem(st)
        if problem:
            raise ValueError(problem)
        if tail and st.st_size > limit:
            os.lseek(fd, st.st_size - limit, os.SEEK_SET)
        chunks, size = [], 0
        most = limit if tail else limit + 1  # a log may grow while its tail is read
        want = min(st.st_size, limit) + (0 if tail else 1)  # one read when the size is right
        while size < most:
            ask = max(1, min(want, most - size))
            chunk = os.read(fd, ask)
            chunks.append(chunk)
            size += len(chunk)
            if len(chunk) < ask:  # the end of the file
                break
            want = most - size
    finally:
        os.close(fd)
    if size > limit:
        raise ValueError(f"more than {article} {what}'s {limit} bytes; not read")
    return b"".join(chunks), st


def _parse(raw: bytes, name: str) -> Endpoint:
    try:
        data = json.loads(raw)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({getattr(exc, 'msg', 'too deeply nested')})") from None
    endpoint = Endpoint.from_dict(data)
    if endpoint.id + ENTRY_SUFFIX != name:
        raise ValueError(f"field 'id': {_show(endpoint.id)} does not match the file name")
    return endpoint


def _heartbeat(written: Endpoint, st: os.stat_result) -> float:
    """The later of the written heartbeat and the file's mtime (renewed in place)."""
    if st.st_mtime_ns > int(written.heartbeat_at * 1e9) + 1_000_000:
        return st.st_mtime_ns / 1e9
    return written.heartbeat_at


@dataclass
class _Seen:
    """What a view knows about one file name."""

    inode: int
    written: Endpoint | None  # the parsed content (None: a problem before or in parsing)
    problem: str | None
    endpoint: Endpoint | None = None  # `written` judged with the last stat
    checked: float = 0.0  # monotonic time of the last stat
    next_check: float = math.inf
    backoff: float = STALE_RECHECK_FIRST


class Registry:
    """A directory of endpoint entries (see the module docstring for what is trusted).

    `scans` counts directory listings, so callers (and tests) can check that a client does
    not list a directory on a parallel file system for every request.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, shared: bool = False,
                 allowed_hosts: str | Sequence[str] | None = None):
        self.path = Path(path).expanduser() if path is not None else default_registry_path()
        self.shared = shared
        self.allowed_hosts = allowed_host_patterns(allowed_hosts)
        self.scans = 0
        self._view: RegistryView | None = None
        self._published: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    @classmethod
    def of(cls, registry: Registry | str | os.PathLike[str] | None = None, *,
           shared: bool | None = None) -> Registry:
        """The one way to get a Registry: an existing one (as is), a path, or None/"" (default).

        `shared=None` keeps an existing Registry's mode (private for a new one).
        """
        if isinstance(registry, Registry):
            if shared is None or shared == registry.shared:
                return registry
            return cls(registry.path, shared=shared, allowed_hosts=registry.allowed_hosts)
        return cls(registry or None, shared=bool(shared))  # "" means the default, like None

    def __repr__(self) -> str:
        return f"Registry({str(self.path)!r}, shared={self.shared})"

    def __getstate__(self) -> dict[str, Any]:
        """Pickles (for Parsl apps) carry the path, the shared flag and the host patterns."""
        return {"path": self.path, "shared": self.shared, "allowed_hosts": self.allowed_hosts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild from `__getstate__`'s dict (a fresh, empty cache)."""
        Registry.__init__(self, state["path"], shared=state["shared"],
                          allowed_hosts=state["allowed_hosts"])

    @property
    def dir_mode(self) -> int:
        """Mode of a registry directory this process creates (an existing one is kept)."""
        return 0o2750 if self.shared else 0o700

    @property
    def file_mode(self) -> int:
        """Mode of entry, stop and log files: group-readable only in shared mode."""
        return 0o640 if self.shared else 0o600

    @property
    def log_dir(self) -> Path:
        """`DIR/logs`: the pilots' server logs."""
        return self.path / "logs"

    # -- the directory ----------------------------------------------------------------

    def check(self) -> tuple[os.stat_result, DirectoryTrust] | None:
        """Stat the directory (one metadata operation) and check it; None if missing.

        Raises RegistryError (one line, naming the fix) for a directory that is not safe.
        """
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise RegistryError(f"registry path {self.path} is not a directory") from None
        except PermissionError as exc:
            raise RegistryError(f"cannot read registry {self.path}: {exc.strerror}") from None
        return st, check_directory(self.path, st)

    def ensure(self) -> None:
        """Create the directory (and `logs/`) if missing; refuse an unsafe existing one.

        Only a directory created here is chmod-ed (past the umask); an existing one keeps
        its mode, e.g. a team directory's setgid bit and group write.
        """
        if self.check() is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                os.mkdir(self.path, self.dir_mode)
                os.chmod(self.path, self.dir_mode)
            except FileExistsError:
                pass
            except OSError as exc:
                raise RegistryError(f"cannot create registry directory {self.path}: "
                                    f"{exc.strerror}") from None
        checked = self.check()
        if checked is None:
            raise RegistryError(f"registry directory {self.path} vanished while creating it")
        st = checked[0]
        try:
            os.mkdir(self.log_dir, stat.S_IMODE(st.st_mode) & 0o2770)
            os.chmod(self.log_dir, stat.S_IMODE(st.st_mode) & 0o2770)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RegistryError(f"cannot create {self.log_dir}: {exc.strerror}") from None

    def entry_path(self, endpoint_id: str) -> Path:
        """`DIR/ID.json`; RegistryError if `endpoint_id` is not a plain name."""
        return self.path / f"{check_id(endpoint_id)}{ENTRY_SUFFIX}"

    def stop_path(self, endpoint_id: str) -> Path:
        """`DIR/ID.stop`; RegistryError if `endpoint_id` is not a plain name."""
        return self.path / f"{check_id(endpoint_id)}{STOP_SUFFIX}"

    # -- writing (pilots) -------------------------------------------------------------

    def _write_atomic(self, target: Path, payload: bytes, mtime: float | None = None) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=self.path)
        try:
            os.fchmod(fd, self.file_mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                if mtime is not None:
                    ns = int(mtime * 1e9)
                    os.utime(handle.fileno(), ns=(ns, ns))
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
        """Write (or replace) an entry atomically; ValueError if the entry is not valid."""
        data = endpoint.to_dict()
        Endpoint.from_dict(data)  # never write what readers would refuse
        self.ensure()
        payload = json.dumps(data, indent=1, sort_keys=True).encode()
        self._write_atomic(self.entry_path(endpoint.id), payload, mtime=endpoint.heartbeat_at)
        with self._lock:
            self._published[endpoint.id] = {**data, "heartbeat_at": None}

    def heartbeat(self, endpoint: Endpoint, now: float | None = None, *,
                  recreate: bool = True) -> bool:
        """Renew an entry's heartbeat: sets `endpoint.heartbeat_at` and the file's mtime.

        In place (one `utime`, no rename, so clients' directory checks see no change) when
        nothing else changed since this process last published it; otherwise publishes the
        whole entry. An entry whose file is gone is written again, unless `recreate` is
        False: then nothing is written and the call returns False (a pilot takes that as a
        stop: someone removed its entry). Returns True when the heartbeat was renewed.
        """
        endpoint.heartbeat_at = time.time() if now is None else now
        with self._lock:
            same = self._published.get(endpoint.id) == {**endpoint.to_dict(),
                                                         "heartbeat_at": None}
        path = self.entry_path(endpoint.id)
        if same:
            ns = int(endpoint.heartbeat_at * 1e9)
            try:
                os.utime(path, ns=(ns, ns), follow_symlinks=False)
                return True
            except FileNotFoundError:
                if not recreate:
                    return False
            except OSError:
                pass  # replaced by someone else's file: write ours again
        elif not recreate and not path.exists():
            return False
        self.publish(endpoint)
        return True

    def remove(self, endpoint_id: str) -> None:
        """Unlink `DIR/ID.json` and `DIR/ID.stop` (never anything outside the directory)."""
        for path in (self.entry_path(endpoint_id), self.stop_path(endpoint_id)):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        with self._lock:
            self._published.pop(endpoint_id, None)

    def request_stop(self, endpoint_id: str) -> None:
        """Ask a pilot to drain; Parsl cannot cancel a running app, so pilots poll for this."""
        target = self.stop_path(endpoint_id)
        self.ensure()
        self._write_atomic(target, b"stop\n")

    def cancel_stop(self, endpoint_id: str) -> None:
        """Unlink `DIR/ID.stop` if it is there."""
        with contextlib.suppress(FileNotFoundError):
            self.stop_path(endpoint_id).unlink()

    def stop_requested(self, endpoint_id: str) -> bool:
        """Whether `DIR/ID.stop` exists (one stat)."""
        return os.path.lexists(self.stop_path(endpoint_id))

    # -- reading (clients) ------------------------------------------------------------

    def read(self, path: Path, trust: DirectoryTrust | None = None,
             now: float | None = None) -> Endpoint:
        """Read one entry file; ValueError (a reason) if it is not a valid, trusted entry.

        Never blocks (no FIFO or device is waited on) and never follows a link. OSError
        (e.g. FileNotFoundError) if the file cannot be opened at all.
        """
        if trust is None:
            checked = self.check()
            if checked is None:
                raise FileNotFoundError(errno.ENOENT, "no registry directory", str(self.path))
            trust = checked[1]
        written, st = self._read_file(path, trust)
        return self._judge(written, st, trust, time.time() if now is None else now)

    def _read_file(self, path: Path, trust: DirectoryTrust) -> tuple[Endpoint, os.stat_result]:
        raw, st = read_trusted_file(path, trust, MAX_ENTRY_BYTES, what="entry")
        return _parse(raw, path.name), st

    def _judge(self, written: Endpoint, st: os.stat_result, trust: DirectoryTrust,
               now: float) -> Endpoint:
        """The written entry as of a stat of its file: trust, heartbeat, host."""
        problem = trust.entry_problem(st)
        if problem:
            raise ValueError(problem)
        beat = _heartbeat(written, st)
        skew = min(written.ttl, MAX_SKEW)
        if beat - now > skew:
            raise ValueError(f"heartbeat {beat - now:.0f} s in the future (more than "
                             f"{skew:.0f} s: clock skew?)")
        for name, url in (("url", written.url), ("metrics_url", written.metrics_url)):
            problem = host_problem(url, self.allowed_hosts, name) if url else None
            if problem:  # only a `pending` entry has no url
                raise ValueError(problem)
        # A heartbeat slightly ahead (skew within the ttl) counts as now, so it ages normally.
        return replace(written, heartbeat_at=min(beat, now), observed_at=now)

    def scan(self) -> RegistryScan:
        """Every valid entry, read afresh, plus the files that are not (never raises for those).

        RegistryError if the directory itself is refused.
        """
        return RegistryView(self).refresh()

    def view(self) -> RegistryView:
        """This registry's cached view (one per Registry object, shared by its pools)."""
        with self._lock:
            if self._view is None:
                self._view = RegistryView(self)
            return self._view

    def get(self, endpoint_id: str) -> Endpoint | None:
        """The valid entry `endpoint_id`, or None (missing, or a problem)."""
        try:
            return self.read(self.entry_path(endpoint_id))
        except (OSError, ValueError):
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
        """Remove stale entries (dead pilots); return what was removed.

        Only `DIR/ID.json` files whose `id` matches their name are touched, and each is
        re-checked (same file, still stale) just before it is unlinked.
        """
        removed = []
        for entry in self.scan().entries:
            if not entry.is_stale():
                continue
            checked = self.check()
            if checked is None:
                break
            try:
                again = self.read(self.entry_path(entry.id), checked[1])
            except (OSError, ValueError):
                continue
            if again.is_stale():
                self.remove(entry.id)
                removed.append(entry)
        return removed


class RegistryView:
    """A client process's cached view of a registry: re-reads only what changed.

    `refresh()` costs one stat of the directory when nothing was added, removed or
    replaced (heartbeats renew files in place, which does not change the directory), and
    nothing at all when the directory was checked less than `QUIET_CHECK_GAP` seconds ago
    and has not changed for `QUIET_AFTER` seconds (so a client refreshing every 2 s stats a
    quiet directory every 4 s). When the directory changed it lists it once and reads only
    files with a new inode. Entries
    named in `recheck` (e.g. the ones a client just failed to reach) get their heartbeat
    re-checked with one stat each, at most every `RECHECK_GAP` seconds; entries seen stale
    or refused are re-checked on their own with a growing back-off (5 s .. 5 min), so a
    pilot that comes back is found without listing the directory again.

    Thread-safe. Raises RegistryError if the directory is refused.
    """

    def __init__(self, registry: Registry):
        self.registry = registry
        self._signature: tuple[int, ...] | None = None
        self._settled = False
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()
        self._checked = -math.inf  # monotonic time of the last directory stat
        self._changed = -math.inf  # ... of the last change seen

    def __repr__(self) -> str:
        return f"RegistryView({self.registry!r}, {len(self._seen)} files)"

    def entries(self, recheck: Collection[str] = ()) -> list[Endpoint]:
        """The valid entries (as of `refresh(recheck)`)."""
        return self.refresh(recheck).entries

    def refresh(self, recheck: Collection[str] = ()) -> RegistryScan:
        """Bring the view up to date (see the class docstring for the cost)."""
        with self._lock:
            mono = time.monotonic()
            quiet = mono - self._changed >= QUIET_AFTER and self._settled
            waiting = any(s.next_check <= mono for s in self._seen.values())
            if quiet and not recheck and not waiting and mono - self._checked < QUIET_CHECK_GAP:
                return self._result()
            self._checked = mono
            checked = self.registry.check()
            if checked is None:
                self._seen.clear()
                self._signature = None
                return RegistryScan([], [])
            st, trust = checked
            now = time.time()
            signature = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_uid,
                         st.st_gid, st.st_mode)
            fresh: set[str] = set()
            if signature != self._signature or not self._settled:
                fresh = self._relist(trust, now, mono)
                if signature != self._signature:
                    self._changed = mono
                self._signature = signature
                self._settled = now - st.st_mtime_ns / 1e9 >= SETTLE_SECONDS
            wanted = {f"{i}{ENTRY_SUFFIX}" for i in recheck}
            for name, seen in self._seen.items():
                if name in fresh:
                    continue
                due = seen.next_check <= mono or (name in wanted
                                                  and mono - seen.checked >= RECHECK_GAP)
                if due:
                    self._recheck(name, seen, trust, now, mono)
            return self._result()

    def _result(self) -> RegistryScan:
        entries, problems = [], []
        for name in sorted(self._seen):
            seen = self._seen[name]
            if seen.endpoint is not None:
                entries.append(seen.endpoint)
            elif seen.problem is not None:
                problems.append(RegistryProblem(self.registry.path / name, seen.problem))
        return RegistryScan(entries, problems)

    def _relist(self, trust: DirectoryTrust, now: float, mono: float) -> set[str]:
        """List the directory; read files that are new or replaced. Returns their names."""
        registry = self.registry
        registry.scans += 1
        try:
            with os.scandir(registry.path) as listing:
                found = [(d.name, d.inode(), d.is_file(follow_symlinks=False),
                          d.is_symlink()) for d in listing
                         if d.name.endswith(ENTRY_SUFFIX) and not d.name.startswith(".")]
        except FileNotFoundError:
            found = []
        except PermissionError as exc:
            raise RegistryError(f"cannot read registry {registry.path}: {exc.strerror}") from None
        fresh = set()
        names = set()
        for name, inode, regular, link in found:
            names.add(name)
            old = self._seen.get(name)
            if old is not None and old.inode == inode:
                continue
            fresh.add(name)
            if not regular:
                # Decided from the listing alone (d_type): a FIFO or device is never opened.
                what = "a symbolic link (entries are plain files)" if link else "not a regular file"
                if not link:
                    with contextlib.suppress(OSError):
                        what = _file_kind(os.lstat(registry.path / name).st_mode) + \
                            ", not an entry file"
                self._seen[name] = _Seen(inode, None, what, checked=mono)
                continue
            self._seen[name] = self._read(name, inode, trust, now, mono)
        for name in set(self._seen) - names:
            del self._seen[name]
        return fresh

    def _read(self, name: str, inode: int, trust: DirectoryTrust, now: float,
              mono: float) -> _Seen:
        path = self.registry.path / name
        try:
            written, st = self.registry._read_file(path, trust)
        except FileNotFoundError:
            return _Seen(inode, None, None, checked=mono)  # removed since the listing
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return _Seen(inode, None, reason, checked=mono)
        seen = _Seen(st.st_ino, written, None)
        self._judge(seen, st, trust, now, mono)
        return seen

    def _judge(self, seen: _Seen, st: os.stat_result, trust: DirectoryTrust, now: float,
               mono: float) -> None:
        assert seen.written is not None
        seen.checked = mono
        try:
            seen.endpoint = self.registry._judge(seen.written, st, trust, now)
            seen.problem = None
        except ValueError as exc:
            seen.endpoint, seen.problem = None, str(exc)
        if seen.endpoint is None or seen.endpoint.is_stale(now):
            seen.next_check = mono + seen.backoff
            seen.backoff = min(STALE_RECHECK_MAX, seen.backoff * 2)
        else:
            seen.next_check, seen.backoff = math.inf, STALE_RECHECK_FIRST

    def _recheck(self, name: str, seen: _Seen, trust: DirectoryTrust, now: float,
                 mono: float) -> None:
        """One stat: same file -> new heartbeat; another file -> read it."""
        try:
            st = os.lstat(self.registry.path / name)
        except FileNotFoundError:
            seen.endpoint = seen.written = None
            seen.problem, seen.next_check, seen.checked = None, math.inf, mono
            return
        except OSError as exc:
            seen.endpoint, seen.problem, seen.checked = None, exc.strerror, mono
            return
        if st.st_ino != seen.inode or seen.written is None:
            if not stat.S_ISREG(st.st_mode):
                self._seen[name] = _Seen(st.st_ino, None,
                                         f"{_file_kind(st.st_mode)}, not an entry file",
                                         checked=mono)
                return
            backoff = seen.backoff
            self._seen[name] = replaced = self._read(name, st.st_ino, trust, now, mono)
            if replaced.endpoint is None:
                replaced.next_check = mono + backoff
                replaced.backoff = min(STALE_RECHECK_MAX, backoff * 2)
            return
        self._judge(seen, st, trust, now, mono)

