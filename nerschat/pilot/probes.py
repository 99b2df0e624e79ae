"""What the pilot asks about its own server.

Is the port free, is the server on it ours, is it alive, how many requests does it hold.
Every probe is against 127.0.0.1 on the pilot's own node. Nothing here raises for a bad
reply: a server that answers nonsense is simply "not ready", "not ours" or "load unknown".
Load and progress are read with the metric names the engine's recipe declares
(`ServerLaunch.metrics`, `nerschat.engine_metrics`).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2

from nerschat.engine_metrics import MetricNames, parse_samples

logger = logging.getLogger(__name__)

LISTEN = "0A"  # TCP state code of a listening socket in /proc/net/tcp{,6}


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:
    """True if another socket listens on `port` (binding it fails with EADDRINUSE).

    Binds the way servers do (SO_REUSEADDR), so connections in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


# -- ownership ----------------------------------------------------------------------------


def check_key(client: httpx2.Client, url: str, api_key: str) -> str | None:
    """Check that the server at `url` (an authenticated route) was started with `api_key`.

    None if it accepts `api_key` and refuses a random one; otherwise a short reason.
    """
    try:
        ours = client.get(url, headers={"Authorization": f"Bearer {api_key}"})
        if ours.status_code != 200:
            return f"it refuses the pilot's API key on {url} (HTTP {ours.status_code})"
        wrong = client.get(url, headers={"Authorization": f"Bearer {secrets.token_urlsafe(24)}"})
    except httpx2.HTTPError as exc:
        return f"{url} did not answer ({type(exc).__name__})"
    if wrong.status_code not in (401, 403):
        return f"it accepts any API key on {url} (HTTP {wrong.status_code} for a wrong key)"
    return None


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on `port` in this network namespace (IPv4 and IPv6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != LISTEN:
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def _session_pids(session: int) -> Iterator[int]:
    """Processes whose session id is `session` (the server and everything it started)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{name}/stat").read_text()
            # Fields after the command name (which may hold spaces): state ppid pgrp session ...
            if int(stat.rsplit(")", 1)[1].split()[3]) == session:
                yield int(name)


def socket_owned_by_session(port: int, session: int) -> bool | None:
    """Whether the socket listening on `port` belongs to a process of `session`.

    True: one of the session's processes holds it. False: something listens on the port but
    no process of the session holds it (another server). None: nothing seen listening, or
    /proc cannot tell (another network namespace, no /proc).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for pid in _session_pids(session):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return True
    return False


# -- load ---------------------------------------------------------------------------------


def parse_load(metrics: str, names: MetricNames) -> int | None:
    """Requests running plus waiting, summed over label sets, from Prometheus text.

    Reads the engine's load gauges (`names.load`); None when none of them is present.
    """
    found = parse_samples(metrics, names.load)
    total = sum(found.values())
    return int(round(max(0.0, total))) if found and math.isfinite(total) else None


def parse_progress(metrics: str, names: MetricNames) -> float | None:
    """A number that grows while the server makes progress.

    The engine's progress counters (`names.progress`: tokens computed, requests finished),
    summed; None when none is exported.
    """
    found = parse_samples(metrics, names.progress)
    total = sum(found.values())
    return total if found and math.isfinite(total) else None


def server_load(client: httpx2.Client, url: str, names: MetricNames) -> int | None:
    """Requests in flight on the server (running + waiting), or None if unknown."""
    try:
        reply = client.get(url)
    except httpx2.HTTPError:
        return None
    return parse_load(reply.text, names) if reply.status_code == 200 else None


# -- liveness -----------------------------------------------------------------------------


@dataclass
class Health:
    """The liveness monitor's view: consecutive failed probes and the last failure."""

    failures: int = 0
    last_error: str = ""
    probes: int = 0


class LivenessMonitor:
    """Probes a health URL every `interval` seconds in a daemon thread.

    Each probe has `timeout` seconds to answer 200; a refused connection, a timeout (a hung or
    SIGSTOPped server still accepts connections but never answers) and any other status count
    as failures. With `metrics_url`, the engine's metric `names` and `stall_timeout` > 0, a
    server that answers its health check but holds requests without progress (its progress
    counters still) for `stall_timeout` seconds fails too: the engine is stuck although its
    HTTP front end lives. `health()` gives the count of consecutive failures (0 after any
    success).
    """

    def __init__(self, url: str, interval: float, timeout: float,
                 metrics_url: str | None = None, stall_timeout: float = 0.0,
                 names: MetricNames | None = None):
        self.url, self.interval, self.timeout = url, interval, timeout
        self.metrics_url, self.stall_timeout, self.names = metrics_url, stall_timeout, names
        self._progress: float | None = None
        self._progress_at = time.monotonic()
        self._health = Health()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nerschat-liveness", daemon=True)

    def start(self) -> LivenessMonitor:
        """Start probing in the background; returns self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop probing (the thread ends after its current probe)."""
        self._closed.set()

    def health(self) -> Health:
        """A snapshot of the consecutive failures so far."""
        with self._lock:
            return Health(self._health.failures, self._health.last_error, self._health.probes)

    def _probe(self, client: httpx2.Client) -> str | None:
        try:
            code = client.get(self.url).status_code
        except httpx2.TimeoutException:
            return f"no answer within {self.timeout:g} s"
        except httpx2.HTTPError as exc:
            return type(exc).__name__
        if code != 200:
            return f"HTTP {code}"
        watched = self.metrics_url and self.names is not None and self.stall_timeout > 0
        return self._stalled(client) if watched else None

    def _stalled(self, client: httpx2.Client) -> str | None:
        """A reason if requests are in flight but nothing moved for `stall_timeout` s."""
        assert self.metrics_url is not None and self.names is not None
        try:
            reply = client.get(self.metrics_url)
        except httpx2.HTTPError:
            return None  # health answered; metrics are best effort
        now = time.monotonic()
        load = parse_load(reply.text, self.names)
        progress = parse_progress(reply.text, self.names)
        if not load or progress is None or progress != self._progress:
            self._progress, self._progress_at = progress, now
            return None
        if now - self._progress_at >= self.stall_timeout:
            return (f"{load} request(s) in flight and no progress for "
                    f"{now - self._progress_at:.0f} s")
        return None

    def _run(self) -> None:
        with httpx2.Client(timeout=self.timeout) as client:
            while not self._closed.wait(self.interval):
                error = self._probe(client)
                with self._lock:
                    self._health.probes += 1
                    if error is None:
                        self._health.failures = 0
                    else:
                        self._health.failures += 1
                        self._health.last_error = error


__all__ = [
    "Health", "LivenessMonitor", "check_key", "parse_load", "parse_progress", "port_in_use",
    "server_load",
    "socket_owned_by_session",
]
