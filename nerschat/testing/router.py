"""A `nerschat router` child process for tests and benchmarks (importable by users too)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nerschat.registry import Endpoint, Registry
from nerschat.router.entry import live_routers
from nerschat.testing.fleet import wait_until

KEY_ENV = "NERSCHAT_TEST_ROUTER_KEY"


@dataclass
class RouterProcess:
    """The running router: `url` ends in /v1, `root` is the server root (chat page, /embed)."""

    process: subprocess.Popen[bytes]
    entry: Endpoint
    key: str
    log: Path

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients."""
        return self.entry.url

    @property
    def root(self) -> str:
        """Server root (chat page, TEI routes)."""
        return self.entry.url.removesuffix("/v1")


@contextlib.contextmanager
def running_router(registry: Registry, key: str | None = None, *args: str,
                   timeout: float = 30.0) -> Iterator[RouterProcess]:
    """Run `nerschat router` on 127.0.0.1 until the block ends (then SIGTERM).

    The key (random unless given) reaches it through an environment variable, never argv;
    extra `args` go to the command (e.g. `--wait-timeout 5`).
    """
    key = key or "test-" + os.urandom(12).hex()
    registry.ensure()
    log = registry.path / f"router-{os.getpid()}.out"
    argv = [sys.executable, "-m", "nerschat.cli.main", "router", "--registry",
            str(registry.path), "--host", "127.0.0.1", "--api-key-env", KEY_ENV, *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, env={**os.environ, KEY_ENV: key}, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def started() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"router exited {process.returncode}: {log.read_text()}")
            return any(e.pid == process.pid for e in live_routers(registry))

        wait_until(started, timeout, "the router's registry entry", interval=0.05)
        entry = next(e for e in live_routers(registry) if e.pid == process.pid)
        yield RouterProcess(process, entry, key, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
