"""The pilot: one process that owns one server and its registry entry for the server's life.

It starts the engine (wrapped in a container runtime), publishes `starting` at once, probes
health until the server answers, flips to `ready`, renews the heartbeat, and drains on
SIGTERM/SIGINT, on a stop request in the registry, or ahead of the SLURM walltime. Whatever
happens, it removes its entry before it exits, so clients only ever see a dead pilot as a
stale heartbeat (when the pilot itself was killed with SIGKILL).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from nerschat.errors import FailureError
from nerschat.pilot.engines import LaunchRequest, ServerLaunch, get_engine
from nerschat.pilot.runtimes import ContainerError, get_runtime
from nerschat.pilot.walltime import current_job_id, job_end_time
from nerschat.pilot.describe import describe_engine
from nerschat.registry import Endpoint, Kind, Registry

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


class PilotError(FailureError):
    """The server could not be started or died before it became ready."""


def free_port(host: str = "") -> int:
    """A port the OS considers free now (another process may still race us for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def advertised_host() -> str:
    """The name other nodes use to reach this one (`nid...` on Perlmutter)."""
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


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16384))
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def group_stop_id(group: str) -> str:
    """The stop-request name that every pilot of a group watches."""
    return f"group-{group}"


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")[:80] or "endpoint"


@dataclass
class PilotConfig:
    """Everything one pilot needs; the CLI and the Parsl app both build one of these."""

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
    extra_args: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    ttl: float = 30.0
    heartbeat_interval: float | None = None
    ready_timeout: float = 900.0
    drain_before: float = 120.0
    linger: float = 1.0
    grace_period: float = 30.0
    expires_at: float | None = None
    endpoint_id: str | None = None
    group: str | None = None  # pilots launched together share a stop request

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError(f"ttl must be positive, got {self.ttl}")
        if self.port is not None and not (0 < self.port < 65536):
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        get_engine(self.engine)  # fail early on an unknown engine
        runtime = get_runtime(self.runtime)
        if runtime.needs_image and not (self.image or get_engine(self.engine).default_image):
            raise ContainerError(f"runtime {self.runtime!r} needs --image")


@dataclass
class StopSignal:
    """Why the pilot is stopping (set from signal handlers, stop files or the deadline)."""

    reason: str | None = None
    event: threading.Event = field(default_factory=threading.Event)

    def set(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.event.set()


class Pilot:
    def __init__(self, config: PilotConfig, registry: Registry):
        self.config = config
        self.registry = registry
        self.stop = StopSignal()
        self.endpoint: Endpoint | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None
        self._heartbeat_interval = config.heartbeat_interval or max(0.2, config.ttl / 3)

    # -- set-up -----------------------------------------------------------------------

    def _install_signal_handlers(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []  # e.g. inside a Parsl worker thread: stop files and deadlines still work
        previous = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous.append((signum, signal.getsignal(signum)))
            signal.signal(signum, lambda num, _frame: self.stop.set(signal.Signals(num).name))
        return previous

    def _launch(self, port: int, api_key: str) -> ServerLaunch:
        cfg = self.config
        gpus = cfg.gpus if cfg.gpus is not None else visible_gpus()
        request = LaunchRequest(
            model=cfg.model, port=port, api_key=api_key, gpus=tuple(gpus), kind=cfg.kind,
            served_name=cfg.served_name, containerized=cfg.runtime != "none",
            extra_args=tuple(cfg.extra_args), options=dict(cfg.options),
        )
        return get_engine(cfg.engine).launch(request)

    def _expires_at(self, job_id: str | None) -> float | None:
        if self.config.expires_at is not None:
            return self.config.expires_at
        return job_end_time(job_id) if job_id else None

    # -- life cycle -------------------------------------------------------------------

    def run(self, on_ready: Callable[[Endpoint], None] | None = None) -> int:
        """Serve until stopped; return the exit status (0 after a requested stop)."""
        previous = self._install_signal_handlers()
        try:
            return self._run(on_ready)
        finally:
            for signum, handler in previous:
                signal.signal(signum, handler)

    def _run(self, on_ready: Callable[[Endpoint], None] | None) -> int:
        cfg = self.config
        self.registry.ensure()
        port = cfg.port or free_port()
        api_key = cfg.api_key or secrets.token_urlsafe(32)
        launch = self._launch(port, api_key)
        command = get_runtime(cfg.runtime).wrap(launch, cfg.image or get_engine(cfg.engine).default_image)
        host = cfg.host or advertised_host()
        job_id = current_job_id()
        endpoint_id = cfg.endpoint_id or _safe_id(
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
        env = {**os.environ, **command.env}
        with open(self.log_path, "ab", buffering=0) as log:
            os.chmod(self.log_path, self.registry.file_mode)
            log.write(f"# nerschat pilot {endpoint_id}: {' '.join(command.argv)}\n".encode())
            try:
                self.process = subprocess.Popen(
                    command.argv, env=env, stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, preexec_fn=_die_with_parent,  # noqa: PLW1509
                )
            except OSError as exc:
                raise PilotError(f"cannot start {command.argv[0]!r}: {exc}") from exc
        self.registry.publish(self.endpoint)
        logger.info("pilot %s: started pid %s, log %s", endpoint_id, self.process.pid, self.log_path)
        try:
            if not self._wait_ready(launch.health_path):
                return self._shutdown()
            self._set_state("ready", ready_at=time.time(), **describe_engine(
                self._health_url("").rstrip("/"), api_key,
                self.endpoint.url.removesuffix("/v1")))
            if on_ready is not None:
                on_ready(self.endpoint)
            self._serve()
            return self._shutdown()
        except BaseException:
            self._kill_server()
            self.registry.remove(endpoint_id)
            raise

    def _health_url(self, path: str) -> str:
        assert self.endpoint is not None
        port = self.endpoint.url.rsplit(":", 1)[1].split("/")[0]
        return f"http://127.0.0.1:{port}{path}"

    def _wait_ready(self, health_path: str) -> bool:
        """Probe health until it answers 200; False if a stop came first."""
        assert self.process is not None and self.endpoint is not None
        url = self._health_url(health_path)
        deadline = time.monotonic() + self.config.ready_timeout
        next_beat = time.monotonic() + self._heartbeat_interval
        with httpx2.Client(timeout=2.0) as probe:
            while True:
                if self._check_stop():
                    return False
                code = self.process.poll()
                if code is not None:
                    self.registry.remove(self.endpoint.id)
                    raise PilotError(
                        f"{self.config.engine} server exited with status {code} before it was "
                        f"ready; last lines of {self.log_path}:\n{tail(self.log_path)}"  # type: ignore[arg-type]
                    )
                with contextlib.suppress(httpx2.HTTPError):
                    if probe.get(url).status_code == 200:
                        return True
                if time.monotonic() > deadline:
                    self._kill_server()
                    self.registry.remove(self.endpoint.id)
                    raise PilotError(
                        f"{self.config.engine} server not ready after {self.config.ready_timeout:.0f}"
                        f" s; last lines of {self.log_path}:\n{tail(self.log_path)}"  # type: ignore[arg-type]
                    )
                if time.monotonic() >= next_beat:
                    self._beat()
                    next_beat = time.monotonic() + self._heartbeat_interval
                self.stop.event.wait(0.25)

    def _check_stop(self) -> bool:
        assert self.endpoint is not None
        if self.registry.stop_requested(self.endpoint.id) or (
            self.config.group and self.registry.stop_requested(group_stop_id(self.config.group))
        ):
            self.stop.set("stop requested in the registry")
        expires = self.endpoint.expires_at
        if expires is not None and time.time() >= expires - self.config.drain_before:
            self.stop.set(f"walltime ends in {max(0.0, expires - time.time()):.0f} s")
        return self.stop.event.is_set()

    def _serve(self) -> None:
        assert self.process is not None
        while not self._check_stop():
            if self.process.poll() is not None:
                return
            self._beat()
            self.stop.event.wait(self._heartbeat_interval)

    def _beat(self) -> None:
        assert self.endpoint is not None
        self.endpoint.heartbeat_at = time.time()
        self.registry.publish(self.endpoint)

    def _set_state(self, state: str, **changes: Any) -> None:
        assert self.endpoint is not None
        self.endpoint.state = state  # type: ignore[assignment]
        for name, value in changes.items():
            setattr(self.endpoint, name, value)
        self._beat()

    def _kill_server(self) -> int | None:
        """SIGTERM the server's process group, SIGKILL after the grace period."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            return process.wait(self.config.grace_period)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait()

    def _shutdown(self) -> int:
        """Drain (if we are stopping) or clean up after a dead server; return the exit status."""
        assert self.process is not None and self.endpoint is not None
        died = self.process.poll()
        if died is not None and not self.stop.event.is_set():
            self.registry.remove(self.endpoint.id)
            logger.error("pilot %s: server exited with status %s; last lines of %s:\n%s",
                         self.endpoint.id, died, self.log_path, tail(self.log_path))  # type: ignore[arg-type]
            return died if died > 0 else (128 - died if died < 0 else 1)
        logger.info("pilot %s: draining (%s)", self.endpoint.id, self.stop.reason)
        self._set_state("draining")
        time.sleep(min(self.config.linger, self.config.grace_period))
        self._kill_server()
        self.registry.remove(self.endpoint.id)
        return 0
