"""Start and stop stub pilots for tests, benchmarks and fault drills (importable by users too)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nerschat.registry import Endpoint, Registry


@dataclass
class PilotProcess:
    """A `nerschat serve` child process and, once ready, its registry entry."""

    process: subprocess.Popen[bytes]
    log: Path
    endpoint: Endpoint | None = None

    @property
    def server_pid(self) -> int | None:
        """The engine server's pid (the pilot's only child), from /proc."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(children.read_text().split()[0])
        return None


@dataclass
class StubFleet:
    """Stub pilots in one registry; stops them all on exit."""

    registry: Registry
    pilots: list[PilotProcess] = field(default_factory=list)

    def start(self, model: str = "m1", kind: str = "llm", *, ttl: float = 5.0,
              extra: tuple[str, ...] = (), **options: object) -> PilotProcess:
        """Start one stub pilot (`nerschat serve --engine stub`) as a subprocess.

        `ttl` is the registry heartbeat TTL in seconds; `options` become `-E name=value` stub
        knobs; `extra` is appended to the command line. Output goes to a log in the registry.
        """
        argv = [sys.executable, "-m", "nerschat.cli.main", "serve", "--engine", "stub",
                "--model", model, "--kind", kind, "--registry", str(self.registry.path),
                "--ttl", str(ttl), "--grace-period", "5", *extra]
        for name, value in options.items():
            argv += ["-E", f"{name}={value}"]
        self.registry.ensure()
        log = self.registry.path / f"pilot-{len(self.pilots)}-{os.getpid()}.out"
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL)
        pilot = PilotProcess(process, log)
        self.pilots.append(pilot)
        return pilot

    def wait_ready(self, pilot: PilotProcess, timeout: float = 30.0) -> Endpoint:
        """The pilot's registry entry once it is ready.

        Raises RuntimeError (with the log's tail) if the pilot exits first, TimeoutError after
        `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.registry.scan().entries:
                if entry.pid == pilot.process.pid and entry.state == "ready":
                    pilot.endpoint = entry
                    return entry
            if pilot.process.poll() is not None:
                raise RuntimeError(f"pilot exited {pilot.process.returncode}: "
                                   f"{pilot.log.read_text()[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"pilot {pilot.process.pid} not ready after {timeout} s")

    def start_ready(self, count: int = 1, model: str = "m1", **kwargs: Any) -> list[Endpoint]:
        """Start `count` stub pilots of `model` (`kwargs` as for `start`) and wait for all."""
        started = [self.start(model, **kwargs) for _ in range(count)]
        return [self.wait_ready(p) for p in started]

    def stop_all(self, timeout: float = 15.0) -> None:
        """SIGTERM every pilot, then kill those still running after `timeout` seconds each."""
        for pilot in self.pilots:
            if pilot.process.poll() is None:
                pilot.process.send_signal(signal.SIGTERM)
        for pilot in self.pilots:
            try:
                pilot.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pilot.process.kill()
                pilot.process.wait()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie counts as dead: it has exited)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.1) -> None:
    """Poll `predicate` until it is true; AssertionError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextlib.contextmanager
def stub_fleet(registry: Registry | str | os.PathLike[str]) -> Iterator[StubFleet]:
    """A `StubFleet` on `registry` whose pilots are all stopped when the block exits."""
    fleet = StubFleet(Registry.of(registry))
    try:
        yield fleet
    finally:
        fleet.stop_all()


def set_faults(endpoint: Endpoint, **faults: object) -> dict[str, object]:
    """Switch a running stub's faults through its admin route; returns the knobs now in force.

    Knobs are those of `nerschat/testing/stub_server.py`: `error_every`, `error_status`, `hang`,
    `slow_factor`, `latency` (seconds), ... Raises `httpx2.HTTPStatusError` if the stub refuses.
    """
    import httpx2

    root = endpoint.url.removesuffix("/v1")
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    reply = httpx2.post(f"{root}/admin/faults", json=faults, headers=headers, timeout=5)
    reply.raise_for_status()
    result: dict[str, object] = reply.json()
    return result


def server_counters(endpoint: Endpoint) -> dict[str, float]:
    """The stub's /metrics as a dict (requests received/served, running, waiting)."""
    import httpx2

    root = endpoint.url.removesuffix("/v1")
    text = httpx2.get(f"{root}/metrics", timeout=5).text
    counters = {}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        counters[name.split("{")[0]] = float(value)
    return counters
