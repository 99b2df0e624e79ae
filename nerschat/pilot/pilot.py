"""The pilot: one process that owns one server and its registry entry for the server's life.

Life cycle (the registry entry's `state` in brackets):

1. **Start** [`starting`]: refuse an explicit `--port` that is already in use (exit 2); start
   the engine (wrapped in a container runtime) and publish the entry at once.
2. **Ready** [`ready`]: `/health` answers 200 *and* the server on the port is ours: it accepts
   the pilot's API key on an authenticated route and refuses a random one, and (where the
   runtime keeps the server in the pilot's process tree) the listening socket belongs to the
   server's session in /proc. A server that dies before it is ready because another process
   took an auto-picked port is restarted on a fresh port (`port_attempts` in all).
3. **Serve**: every second, check the stop requests and the walltime; every heartbeat, renew
   the entry. A liveness monitor probes `/health` every heartbeat with `health_timeout`
   (and, where the engine has metrics, fails a probe when requests are held without any
   progress for `stall_timeout`); after `health_failures` failures in a row (a hung or
   SIGSTOPped server, a stuck engine) the entry becomes
   [`unhealthy`] (clients route only to `ready`), and goes back to `ready` at the first probe
   that succeeds. A server unhealthy for `unhealthy_timeout` seconds is killed; the pilot
   then restarts it in place (same entry and port) up to `max_restarts` times within
   `restart_window` seconds, or, past that (default: no restarts), exits 1. A server that
   dies on its own is handled the same way. If the pilot finds its entry removed from the registry (a `nerschat stop` or
   prune that took a late heartbeat for a dead pilot, with the stop request removed along
   with the entry), it treats that as a stop request.
4. **Drain** [`draining`] on SIGTERM/SIGINT/SIGHUP, a stop request, or `drain_before` seconds before
   the SLURM walltime: publish `draining` at once, keep the server up at least `linger`
   seconds (clients re-read the registry every 2 s), then until the server reports no request
   running or waiting on its metrics, up to `grace_period` seconds (for the walltime: the time
   left minus `stop_timeout` and a margin). A second SIGTERM/SIGINT ends the wait. Then
   SIGTERM the server (vLLM >= 0.18 is started with `--shutdown-timeout`, so it finishes what
   is left) and SIGKILL it after `stop_timeout` seconds.
5. **Gone**: the entry is removed whatever happened, so clients see a dead pilot only as a
   stale heartbeat when the pilot itself was SIGKILLed. A server that dies on its own (and is
   not restarted) ends the pilot with a non-zero status and the tail of the server's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import secrets
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx2

from nerschat.errors import FailureError, UsageError
from nerschat.pilot.describe import describe_engine
from nerschat.pilot.engines import LaunchRequest, ServerLaunch, get_engine
from nerschat.pilot.probes import (
    LivenessMonitor,
    check_key,
    port_in_use,
    server_load,
    socket_owned_by_session,
)
from nerschat.pilot.runtimes import ContainerError, get_runtime
from nerschat.pilot.walltime import current_job_id, job_end_time
from nerschat.registry import Endpoint, Kind, Registry, State

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
TICK = 1.0  # seconds between checks of stop requests, the walltime and the server process
WALLTIME_MARGIN = 5.0  # seconds kept free before the walltime after the server is stopped


class PilotError(FailureError):
    """The server could not be started, died before it became ready, or stopped answering."""


class PortInUseError(UsageError):
    """An explicitly requested port is already taken on this node."""


class DuplicateIdError(UsageError):
    """An explicitly requested entry id belongs to a pilot that is still alive."""


def free_port(host: str = "") -> int:
    """A port the OS considers free now (another process may still race us for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def advertised_host() -> str:
    """The name other nodes use to reach this one (`NERSCHAT_ADVERTISE_HOST`, else hostname)."""
    return os.environ.get("NERSCHAT_ADVERTISE_HOST") or socket.gethostname()


def visible_gpus() -> tuple[str, ...]:
    """GPUs given to this process by SLURM or Parsl (`CUDA_VISIBLE_DEVICES`)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return tuple(g for g in value.split(",") if g) if value else ()


def _die_with_parent() -> None:
    """In the child: new session (so we can signal the whole group) and SIGTERM if we die."""
    os.setsid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


GAVE_UP = "# nerschat pilot gave up:"  # last line of the server log when the pilot gives up

_NO_LINK = os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC


def tail(path: Path | None, lines: int = 20) -> str:
    """The last `lines` lines of a log file ("" if it cannot be read).

    Never follows a link and reads only a regular file (the log directory may be a team's).
    """
    if path is None:
        return ""
    try:
        fd = os.open(path, os.O_RDONLY | _NO_LINK)
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        with os.fdopen(fd, "rb") as handle:
            fd = -1
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    finally:
        if fd >= 0:
            os.close(fd)
    return "\n".join(text.splitlines()[-lines:])


def _log_file_problem(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not you"
    if st.st_nlink != 1:
        return f"{st.st_nlink} hard links to it"
    return None


def open_server_log(path: Path, mode: int) -> int:
    """Open a pilot's server log for appending; the file descriptor (the caller closes it).

    The log directory may be writable by a team: the file is opened without following a
    link (`O_NOFOLLOW`), without becoming a controlling terminal (`O_NOCTTY`) and without
    blocking on a FIFO. Whatever is at `path` and is not a plain file of this user with one
    link (a symbolic link, a FIFO, someone else's file, a hard link to another file) is
    unlinked and replaced by a new file (`O_EXCL`), so nothing outside the log is ever
    written. PilotError (one line, naming the path) if that cannot be done.
    """
    append = os.O_WRONLY | os.O_APPEND | _NO_LINK
    problem = "it changed while being replaced"
    for _attempt in range(3):
        try:
            fd = os.open(path, append | os.O_CREAT, mode)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR, errno.EACCES,
                                 errno.EPERM):
                raise PilotError(f"cannot open server log {path}: {exc.strerror}") from None
            problem = "a symbolic link" if exc.errno == errno.ELOOP else (
                exc.strerror or "cannot be opened")
        else:
            found = _log_file_problem(os.fstat(fd))
            if found is None:
                os.fchmod(fd, mode)
                return fd
            os.close(fd)
            problem = found
        logger.warning("pilot: server log %s is %s; replacing it", path, problem)
        try:
            os.unlink(path)  # the link itself, never its target
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PilotError(f"server log {path} is {problem} and cannot be replaced "
                             f"({exc.strerror}): remove it, or use another --id") from None
        try:
            fd = os.open(path, append | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            continue  # planted again in between: check the new one
        except OSError as exc:
            raise PilotError(f"cannot create server log {path}: {exc.strerror}") from None
        os.fchmod(fd, mode)
        return fd
    raise PilotError(f"server log {path} is {problem}, again after replacing it: remove it, "
                     f"or use another --id")


def group_stop_id(group: str) -> str:
    """The stop-request name that every pilot of a group watches."""
    return f"group-{group}"


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "endpoint"


@dataclass
class PilotConfig:
    """Everything one pilot needs; the CLI and the Parsl app both build one of these.

    What to serve: `engine` (`vllm`, `tei`, `stub`), `model`, `kind` (default: the engine's),
    `served_name` (default: the model), `options` (engine options, NAME -> value),
    `extra_args` (passed to the server unchanged), `runtime`, `image` and `runtime_modules`
    (container, and the site's runtime modules such as Shifter's `gpu,nccl-plugin`).
    Where: `port` (None: a free one, retried up to `port_attempts` times when another
    process takes it first; an explicit port already in use is refused with
    PortInUseError), `host` (advertised name), `gpus` (ids; default `CUDA_VISIBLE_DEVICES`),
    `api_key` (default: a random one).

    Times, all in seconds:
      - `ttl`: a heartbeat older than this makes the entry stale (dead) for clients.
      - `heartbeat_interval`: between heartbeats and liveness probes (default ttl/3, >= 0.2).
      - `ready_timeout`: from the server's start until it must be ready.
      - `drain_before`: the drain starts this long before the SLURM walltime end.
      - `linger`: a draining server stays up at least this long (clients' registry refresh).
      - `grace_period`: longest wait for requests in flight once draining (SIGTERM or stop
        request); for the walltime the budget is the time left minus `stop_timeout` and 5 s.
      - `stop_timeout`: between SIGTERM to the server and SIGKILL.
      - `health_timeout`: for one liveness probe of `/health` after ready.
      - `stall_timeout`: a probe also fails when the server holds requests but its token
        counters have not moved for this long (engine stuck behind a live HTTP front end;
        engines with metrics only); 0: no such check.
      - `unhealthy_timeout`: an unhealthy server is killed (exit 1) after this; 0: never.
      - `expires_at`: walltime end, epoch seconds (default: asked from SLURM).
      - `walltime`: the pilot's own time limit from its start (`serve --walltime`); the end
        is the earliest of this, `expires_at` and the SLURM job's end.
    `health_failures`: consecutive failed probes that make the entry `unhealthy`.
    `max_restarts`: a server that dies or stays unhealthy is restarted in place (same entry,
    same port when free) at most this many times within `restart_window` seconds; past
    that, or with 0 (the default), the pilot removes its entry and exits non-zero.
    `endpoint_id`: the entry's id (default: model.host.port.random); `group`: pilots
    launched together share a stop request.
    """

    engine: str
    model: str
    kind: Kind | None = None
    served_name: str | None = None
    port: int | None = None
    host: str | None = None
    gpus: tuple[str, ...] | None = None
    api_key: str | None = None
    runtime: str = "none"
    image: str | None = None
    runtime_modules: tuple[str, ...] = ()  # the site's, e.g. Shifter's ("gpu", "nccl-plugin")
    extra_args: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    ttl: float = 30.0
    heartbeat_interval: float | None = None
    ready_timeout: float = 900.0
    drain_before: float = 120.0
    linger: float = 3.0
    grace_period: float = 60.0
    stop_timeout: float = 15.0
    health_timeout: float = 5.0
    health_failures: int = 3
    stall_timeout: float = 120.0
    unhealthy_timeout: float = 300.0
    port_attempts: int = 3
    max_restarts: int = 0
    restart_window: float = 600.0
    expires_at: float | None = None
    walltime: float | None = None
    endpoint_id: str | None = None
    group: str | None = None

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError(f"ttl must be positive, got {self.ttl}")
        if self.port is not None and not (0 < self.port < 65536):
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must not be negative, got {self.max_restarts}")
        if self.health_failures < 1:
            raise ValueError(f"health_failures must be at least 1, got {self.health_failures}")
        if self.walltime is not None and not self.walltime > 0:
            raise ValueError(f"walltime must be positive, got {self.walltime}")
        for name in ("linger", "grace_period", "stop_timeout", "drain_before",
                     "unhealthy_timeout", "stall_timeout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        get_engine(self.engine)  # fail early on an unknown engine
        runtime = get_runtime(self.runtime, self.runtime_modules)
        if runtime.needs_image and not (self.image or get_engine(self.engine).default_image):
            raise ContainerError(f"runtime {self.runtime!r} needs --image")


@dataclass
class StopSignal:
    """Why the pilot is stopping (set from signal handlers, stop files or the deadline).

    `walltime` tells a drain for the walltime from others; `signals` counts SIGTERM, SIGINT
    and SIGHUP (a second one cuts the drain short).
    """

    reason: str | None = None
    walltime: bool = False
    signals: int = 0
    event: threading.Event = field(default_factory=threading.Event)

    def set(self, reason: str, *, walltime: bool = False) -> None:
        """Record the first reason; later calls only wake the waiters."""
        if self.reason is None:
            self.reason = reason
            self.walltime = walltime
        self.event.set()


ReadyOutcome = Literal["ready", "stopped", "port-taken"]


class Pilot:
    """Runs one server for one PilotConfig and keeps its registry entry true (see module doc)."""

    def __init__(self, config: PilotConfig, registry: Registry):
        self.config = config
        self.registry = registry
        self.stop = StopSignal()
        self.endpoint: Endpoint | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.launch: ServerLaunch | None = None
        self.log_path: Path | None = None
        self._heartbeat_interval = config.heartbeat_interval or max(0.2, config.ttl / 3)
        self._published = False
        self._removed = False
        self._restarts = 0  # server restarts so far (in the entry's `extra` once non-zero)
        self._walltime_end: float | None = None  # set at the first start (restarts keep it)

    # -- set-up -----------------------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop.signals += 1
        self.stop.set(signal.Signals(signum).name)

    def _install_signal_handlers(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []  # e.g. inside a Parsl worker thread: stop files and deadlines still work
        previous: list[tuple[int, Any]] = []
        # SIGHUP: the terminal or login session that started the pilot went away.
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            previous.append((signum, signal.getsignal(signum)))
            signal.signal(signum, self._on_signal)
        return previous

    def _launch(self, port: int, api_key: str) -> ServerLaunch:
        cfg = self.config
        gpus = cfg.gpus if cfg.gpus is not None else visible_gpus()
        request = LaunchRequest(
            model=cfg.model, port=port, api_key=api_key, gpus=tuple(gpus), kind=cfg.kind,
            served_name=cfg.served_name, containerized=cfg.runtime != "none",
            extra_args=tuple(cfg.extra_args), options=dict(cfg.options),
            image=self._image() if cfg.runtime != "none" else None,
            stop_timeout=cfg.stop_timeout,
        )
        return get_engine(cfg.engine).launch(request)

    def _image(self) -> str | None:
        return self.config.image or get_engine(self.config.engine).default_image

    def _expires_at(self, job_id: str | None) -> float | None:
        """The earliest of the configured end, the own walltime and the SLURM job's end."""
        cfg = self.config
        ends = [cfg.expires_at]
        if cfg.walltime is not None:
            if self._walltime_end is None:
                self._walltime_end = time.time() + cfg.walltime
            ends.append(self._walltime_end)
        if cfg.expires_at is None and job_id:
            ends.append(job_end_time(job_id))
        known = [end for end in ends if end is not None]
        return min(known) if known else None

    # -- life cycle -------------------------------------------------------------------

    def run(self, on_ready: Callable[[Endpoint], None] | None = None) -> int:
        """Serve until stopped; return the exit status (0 after a requested stop).

        Raises PortInUseError (an explicit port is taken) and PilotError (the server did
        not become ready, or stayed unhealthy).
        """
        previous = self._install_signal_handlers()
        try:
            return self._run(on_ready)
        finally:
            for signum, handler in previous:
                signal.signal(signum, handler)

    def _run(self, on_ready: Callable[[Endpoint], None] | None) -> int:
        cfg = self.config
        self.registry.ensure()
        host = cfg.host or advertised_host()
        if cfg.port is not None and port_in_use(cfg.port):
            raise PortInUseError(
                f"port {cfg.port} is already in use on {host}: choose another --port, or leave "
                "--port out to get a free one"
            )
        if cfg.endpoint_id is not None:
            self._refuse_live_id(cfg.endpoint_id)
        api_key = cfg.api_key or secrets.token_urlsafe(32)
        restarts: list[float] = []  # monotonic times of restarts within the window
        port, endpoint_id = cfg.port, cfg.endpoint_id
        while True:
            if not self._start_until_ready(port, api_key, host, endpoint_id):
                return self._shutdown(served=False)
            try:
                assert self.launch is not None
                self._set_state("ready", ready_at=time.time(), **describe_engine(
                    self._local_url(""), api_key, self._entry.url.removesuffix("/v1"),
                    metrics_path=self.launch.metrics_path, metrics=self.launch.metrics))
                if on_ready is not None and not self._restarts:
                    on_ready(self._entry)
                failure = self._serve()
                if failure is None and (self.stop.event.is_set() or not cfg.max_restarts):
                    return self._shutdown(served=True)  # a stop, or a dead server's status
                why = failure or f"{cfg.engine} server exited with status {self._process.poll()}"
                restarts = self._restart_or_fail(why, restarts)
                port, endpoint_id = self._port, self._entry.id
            except BaseException:
                self._abandon()
                raise

    def _refuse_live_id(self, endpoint_id: str) -> None:
        """DuplicateIdError if `endpoint_id` is the entry of another pilot that is alive.

        A `pending` entry (the queued job's placeholder) and a stale one (a dead pilot) are
        replaced; anything else would make two pilots write one entry, one of them unseen.
        """
        live = self.registry.get(endpoint_id)
        if live is None or live.state == "pending" or live.is_stale():
            return
        age = max(0.0, time.time() - live.heartbeat_at)
        raise DuplicateIdError(
            f"endpoint id {endpoint_id} belongs to a live pilot (pid {live.pid} on "
            f"{live.host}, {live.state}, heartbeat {age:.0f} s ago): choose another --id, or "
            f"stop it first (nerschat stop {endpoint_id})")

    def _restart_or_fail(self, why: str, restarts: list[float]) -> list[float]:
        """Kill the server for a restart; return the restart times within the window.

        Past `max_restarts` (or with 0), remove the entry and raise PilotError with `why`.
        """
        cfg = self.config
        now = time.monotonic()
        restarts = [t for t in restarts if now - t < cfg.restart_window]
        if len(restarts) >= cfg.max_restarts:
            if cfg.max_restarts:
                why += (f"; restarted {len(restarts)} time(s) in the last "
                        f"{cfg.restart_window:.0f} s already, the most --max-restarts allows")
            self._kill_server()
            message = f"{why}. Last lines of {self.log_path}:\n{tail(self.log_path)}"
            if self.log_path is not None:
                # The reason, for `nerschat pool status` / `ls --pool` once the entry is gone:
                # written before the entry goes, so whoever sees it gone finds the reason.
                with contextlib.suppress(OSError, PilotError), open(
                        open_server_log(self.log_path, self.registry.file_mode), "a",
                        encoding="utf-8", errors="backslashreplace") as log:
                    log.write(f"{GAVE_UP} {self._entry.id}: {why}\n")
            self._abandon()
            raise PilotError(message)
        logger.warning("pilot %s: %s; restarting it (%s of %s within %.0f s)", self._entry.id,
                       why, len(restarts) + 1, cfg.max_restarts, cfg.restart_window)
        self._kill_server()
        self._restarts += 1
        return [*restarts, now]

    def _start_until_ready(self, port: int | None, api_key: str, host: str,
                           endpoint_id: str | None) -> bool:
        """Start the server and wait until it is ready (True) or a stop came first (False).

        Without an explicit port, a port another process took first is replaced by a fresh
        one, `port_attempts` times in all. Raises PilotError when the server cannot start.
        """
        cfg = self.config
        attempts = 1 if cfg.port is not None else max(1, cfg.port_attempts)
        for attempt in range(1, attempts + 1):
            self._start(port or free_port(), api_key, host, endpoint_id)
            try:
                outcome = self._wait_ready()
            except BaseException:
                self._abandon()
                raise
            if outcome != "port-taken":
                return outcome == "ready"
            logger.warning("pilot: port %s was taken by another process before the server "
                           "could listen (attempt %s of %s); trying a fresh port",
                           self._port, attempt, attempts)
            self._abandon()
            port = None
        raise PilotError(f"{cfg.engine} server could not get a port: another process took "
                         f"each of the {attempts} free ports picked for it")

    @property
    def _entry(self) -> Endpoint:
        assert self.endpoint is not None
        return self.endpoint

    @property
    def _process(self) -> subprocess.Popen[bytes]:
        assert self.process is not None
        return self.process

    def _start(self, port: int, api_key: str, host: str, endpoint_id: str | None) -> None:
        """Build the command, start the server, publish the `starting` entry."""
        cfg = self.config
        launch = self.launch = self._launch(port, api_key)
        command = get_runtime(cfg.runtime, cfg.runtime_modules).wrap(launch, self._image())
        job_id = current_job_id()
        endpoint_id = endpoint_id or _safe_id(
            f"{launch.served_model}.{host}.{port}.{uuid.uuid4().hex[:6]}"
        )
        self.log_path = self.registry.log_dir / f"{endpoint_id}.log"
        now = time.time()
        self.endpoint = Endpoint(
            id=endpoint_id, kind=launch.kind, engine=cfg.engine, model=launch.served_model,
            url=f"http://{host}:{port}/v1", state="starting", api_key=api_key, pid=os.getpid(),
            host=host, slurm_job_id=job_id, heartbeat_at=now, ttl=cfg.ttl,
            expires_at=self._expires_at(job_id), started_at=now,
            gpus=",".join(cfg.gpus if cfg.gpus is not None else visible_gpus()) or None,
            capacity=launch.capacity, max_model_len=launch.max_model_len,
            log_path=str(self.log_path),
            extra={"group": cfg.group} if cfg.group else {},
        )
        if self._restarts:
            self.endpoint.extra["restarts"] = self._restarts
        env = {**os.environ, **command.env}
        with open(open_server_log(self.log_path, self.registry.file_mode), "ab",
                  buffering=0) as log:
            log.write(f"# nerschat pilot {endpoint_id}: {' '.join(command.argv)}\n".encode())
            try:
                self.process = subprocess.Popen(
                    command.argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
                )
            except OSError as exc:
                raise PilotError(f"cannot start {command.argv[0]!r}: {exc}") from exc
        self._published = self._removed = False
        self._beat()
        logger.info("pilot %s: started pid %s, log %s", endpoint_id, self.process.pid,
                    self.log_path)

    def _abandon(self) -> None:
        """Kill the server at once and remove the entry (failures and retries)."""
        self._kill_server()
        if self.endpoint is not None:
            self.registry.remove(self.endpoint.id)
        self._published = False

    def _local_url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._port}{path}"

    @property
    def _port(self) -> int:
        return int(self._entry.url.rsplit(":", 1)[1].split("/")[0])

    def _foreign(self, client: httpx2.Client) -> str | None:
        """None if the server answering on our port is ours; else why it is not."""
        assert self.launch is not None
        reason = check_key(client, self._local_url(self.launch.auth_path), self._entry.api_key or "")
        if reason is not None:
            return reason
        if get_runtime(self.config.runtime).server_in_session:
            owned = socket_owned_by_session(self._port, self._process.pid)
            if owned is False:
                return "the socket listening on the port belongs to another process tree"
        return None

    def _wait_ready(self) -> ReadyOutcome:
        """Probe health until our own server answers (`ready`).

        `stopped` if a stop came first, `port-taken` if the server died because another
        process holds an auto-picked port; PilotError otherwise.
        """
        assert self.launch is not None
        process, cfg = self._process, self.config
        url = self._local_url(self.launch.health_path)
        deadline = time.monotonic() + cfg.ready_timeout
        next_beat = time.monotonic() + self._heartbeat_interval
        warned = ""
        with httpx2.Client(timeout=2.0) as probe:
            while True:
                if self._check_stop():
                    return "stopped"
                code = process.poll()
                if code is not None:
                    return self._died_before_ready(code)
                with contextlib.suppress(httpx2.HTTPError):
                    if probe.get(url).status_code == 200:
                        foreign = self._foreign(probe)
                        if foreign is None:
                            return "ready"
                        if foreign != warned:
                            logger.warning("pilot %s: port %s is answered by a server that is "
                                           "not ours (%s); waiting for our own",
                                           self._entry.id, self._port, foreign)
                            warned = foreign
                if time.monotonic() > deadline:
                    raise PilotError(
                        f"{cfg.engine} server not ready after {cfg.ready_timeout:.0f} s"
                        + (f" (port {self._port}: {warned})" if warned else "")
                        + f"; last lines of {self.log_path}:\n{tail(self.log_path)}"
                    )
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self._heartbeat_interval
                self.stop.event.wait(0.25)

    def _died_before_ready(self, code: int) -> ReadyOutcome:
        port = self._port
        if port_in_use(port):
            if self.config.port is None:
                return "port-taken"
            raise PilotError(
                f"{self.config.engine} server exited with status {code}: port {port} was taken "
                f"by another process while it started; choose another --port or leave it out"
            )
        raise PilotError(
            f"{self.config.engine} server exited with status {code} before it was ready; "
            f"last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def _check_stop(self) -> bool:
        entry = self._entry
        if self.registry.stop_requested(entry.id) or (
            self.config.group and self.registry.stop_requested(group_stop_id(self.config.group))
        ):
            self.stop.set("stop requested in the registry")
        expires = entry.expires_at
        if expires is not None and time.time() >= expires - self.config.drain_before:
            self.stop.set(f"walltime ends in {max(0.0, expires - time.time()):.0f} s",
                          walltime=True)
        return self.stop.event.is_set()

    def _serve(self) -> str | None:
        """Until a stop or the server's exit; a failure message if it stayed unhealthy."""
        cfg, process = self.config, self._process
        assert self.launch is not None
        metrics = self.launch.metrics_path
        monitor = LivenessMonitor(
            self._local_url(self.launch.health_path), self._heartbeat_interval,
            cfg.health_timeout, metrics_url=self._local_url(metrics) if metrics else None,
            stall_timeout=cfg.stall_timeout, names=self.launch.metrics).start()
        next_beat = time.monotonic() + self._heartbeat_interval
        unhealthy_since = 0.0
        try:
            while not self._check_stop():
                if process.poll() is not None:
                    return None
                health = monitor.health()
                state = self._entry.state
                if state == "ready" and health.failures >= cfg.health_failures:
                    unhealthy_since = time.monotonic()
                    logger.warning("pilot %s: unhealthy after %s failed health probes (%s); "
                                   "clients stop using it", self._entry.id, health.failures,
                                   health.last_error)
                    self._set_state("unhealthy")
                    next_beat = time.monotonic() + self._heartbeat_interval
                elif state == "unhealthy" and health.failures == 0:
                    logger.warning("pilot %s: healthy again after %.0f s", self._entry.id,
                                   time.monotonic() - unhealthy_since)
                    self._set_state("ready")
                    next_beat = time.monotonic() + self._heartbeat_interval
                elif (state == "unhealthy" and cfg.unhealthy_timeout
                      and time.monotonic() - unhealthy_since >= cfg.unhealthy_timeout):
                    return (f"{cfg.engine} server {self._entry.id} stopped answering "
                            f"{self.launch.health_path} ({health.last_error}) for "
                            f"{cfg.unhealthy_timeout:.0f} s")
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self._heartbeat_interval
                self.stop.event.wait(min(TICK, self._heartbeat_interval))
        finally:
            monitor.close()
        return None

    def _beat(self) -> None:
        """Renew the heartbeat (in place: the file's mtime, unless the entry changed).

        An entry removed by someone else (a stop or prune that took a late heartbeat for a
        dead pilot, removing the stop request with it) counts as a stop request, and is not
        written again.
        """
        entry = self._entry
        if self._removed:
            return
        if not self.registry.heartbeat(entry, recreate=not self._published):
            self._removed = True
            self.stop.set("entry removed from the registry (stopped or pruned while a "
                          "heartbeat was late)")
            return
        self._published = True

    def _set_state(self, state: State, **changes: Any) -> None:
        entry = self._entry
        entry.state = state
        for name, value in changes.items():
            setattr(entry, name, value)
        self._beat()

    # -- stopping ---------------------------------------------------------------------

    def _drain_budget(self) -> float:
        """Seconds the drain may wait for requests in flight (see PilotConfig)."""
        cfg = self.config
        expires = self._entry.expires_at
        left = None if expires is None else (
            expires - time.time() - cfg.stop_timeout - WALLTIME_MARGIN)
        if self.stop.walltime and left is not None:
            return max(0.0, left)
        return max(0.0, min(cfg.grace_period, left) if left is not None else cfg.grace_period)

    def _drain(self) -> None:
        """Publish `draining`, then wait for the server's requests in flight to finish."""
        assert self.launch is not None
        cfg, process, entry = self.config, self._process, self._entry
        self._set_state("draining")
        budget = self._drain_budget()
        started = time.monotonic()
        deadline = started + budget
        linger_until = started + min(cfg.linger, budget)
        next_beat = started + self._heartbeat_interval
        path, names = self.launch.metrics_path, self.launch.metrics
        logger.info("pilot %s: draining (%s); up to %.0f s for requests in flight", entry.id,
                    self.stop.reason, budget)
        load: int | None = None
        with httpx2.Client(timeout=2.0) as client:
            while process.poll() is None and self.stop.signals < 2:
                now = time.monotonic()
                if now >= next_beat:
                    self._beat()
                    next_beat = now + self._heartbeat_interval
                if now >= linger_until:
                    if path is None or names is None:
                        return  # no queue to watch: the engine's own shutdown finishes them
                    load = server_load(client, self._local_url(path), names)
                    if load is None or load == 0:
                        logger.info("pilot %s: drained in %.1f s%s", entry.id, now - started,
                                    "" if load == 0 else " (server load unknown)")
                        return
                if now >= deadline:
                    logger.warning("pilot %s: drain budget of %.0f s used up with %s request(s) "
                                   "in flight; stopping the server", entry.id, budget, load)
                    return
                time.sleep(max(0.05, min(0.25, deadline - now, max(0.0, linger_until - now))))

    def _kill_server(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL after `stop_timeout` seconds."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        for signum in (signal.SIGTERM, signal.SIGCONT):  # CONT: a stopped server can exit
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)
        try:
            return process.wait(self.config.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def _shutdown(self, served: bool) -> int:
        """Drain (if we are stopping) or clean up after a dead server; return the exit status."""
        process, entry = self._process, self._entry
        died = process.poll()
        if died is not None and not self.stop.event.is_set():
            self.registry.remove(entry.id)
            logger.error("pilot %s: server exited with status %s; last lines of %s:\n%s",
                         entry.id, died, self.log_path, tail(self.log_path))
            return died if died > 0 else (128 - died if died < 0 else 1)
        if served and died is None:
            self._drain()
        else:
            logger.info("pilot %s: stopping (%s)", entry.id, self.stop.reason)
            self._set_state("draining")
        self._kill_server()
        self.registry.remove(entry.id)
        return 0
