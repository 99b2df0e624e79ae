"""Running a router: bind, publish the `router` entry, renew it, stop cleanly.

`Router` is the in-process form (tests, benchmarks, `async with Router(...) as r`);
`run_router()` is what `nerschat router` runs until SIGTERM/SIGINT or `nerschat stop`.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from aiohttp import web

from nerschat.errors import UsageError
from nerschat.registry import Endpoint, Registry
from nerschat.router.app import RouterApp
from nerschat.router.catalog import Catalog
from nerschat.router.core import RoutingCore
from nerschat.router.entry import RouterKey, advertised_host, key_location, new_entry
from nerschat.router.metrics import RouterMetrics

SHUTDOWN_GRACE = 10.0  # seconds in-flight answers get to finish on SIGTERM
STOP_POLL = 1.0  # seconds between looks for a stop request


@dataclass
class RouterConfig:
    """How a router runs.

    host, port : address to bind (port 0 picks a free one; the entry has the real one).
    key : the inbound API key (see `nerschat.router.entry.router_key`).
    wait_timeout : seconds a request waits for a replica of a starting or failing model.
    request_timeout : seconds of upstream silence before an attempt fails over.
    ttl : seconds the entry stays fresh without a heartbeat (renewed every ttl/3).
    """

    registry: Registry
    key: RouterKey
    host: str = "0.0.0.0"
    port: int = 0
    wait_timeout: float = 300.0
    request_timeout: float = 600.0
    ttl: float = 30.0
    publish: bool = True

    def __repr__(self) -> str:
        return (f"RouterConfig(registry={self.registry!r}, host={self.host!r}, "
                f"port={self.port}, key={self.key!r})")


def raise_open_file_limit() -> None:
    """Idle client connections cost a file descriptor each: use the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Router:
    """A running router (use `async with`); `url` and `entry` are set once started."""

    def __init__(self, config: RouterConfig):
        self.config = config
        self.metrics = RouterMetrics()
        self.core = RoutingCore(config.registry, self.metrics, wait_timeout=config.wait_timeout,
                                request_timeout=config.request_timeout)
        self.metrics.watch_pool(self.core.endpoints)
        self.catalog = Catalog(config.registry)
        self.app = RouterApp(self.core, self.catalog, self.metrics, config.key.value).build()
        # A client that hangs up cancels its handler, which closes the upstream request.
        self.runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True,
                                    shutdown_timeout=SHUTDOWN_GRACE)
        self.entry: Endpoint | None = None
        self.port = 0
        self._beat: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()

    @property
    def url(self) -> str:
        """Base URL for OpenAI clients (ends in /v1)."""
        host = advertised_host(self.config.host)
        return f"http://{host}:{self.port}/v1"

    async def start(self) -> None:
        """Bind, then publish the registry entry and start its heartbeat."""
        raise_open_file_limit()
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.host, self.config.port, backlog=4096)
        try:
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise UsageError(f"cannot listen on {self.config.host}:{self.config.port}: "
                             f"{exc.strerror or exc}; pick another --port") from exc
        self.port = int(self.runner.addresses[0][1])
        if self.config.publish:
            self.entry = new_entry(advertised_host(self.config.host), self.port,
                                   self.config.key, self.config.ttl)
            self.config.registry.publish(self.entry)
            self._beat = asyncio.create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        """Renew the entry every ttl/3 s; stop on a stop request (`nerschat stop`)."""
        assert self.entry is not None
        registry = self.config.registry
        beat = max(0.2, self.config.ttl / 3)
        next_beat = time.monotonic() + beat
        while True:
            await asyncio.sleep(min(STOP_POLL, beat))
            if await asyncio.to_thread(registry.stop_requested, self.entry.id):
                self.stopped.set()
                return
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat
                await asyncio.to_thread(registry.heartbeat, self.entry)

    def key_location(self) -> str:
        """Where the router's key is, in words (never the key)."""
        if self.entry is None:
            return "not published"
        return key_location(self.config.registry, self.entry)

    async def stop(self) -> None:
        """Remove the entry, drain in-flight answers, close the connections."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        if self.entry is not None:
            self.config.registry.remove(self.entry.id)
        await self.runner.cleanup()
        await self.core.aclose()

    async def __aenter__(self) -> Router:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()


async def run_router(config: RouterConfig,
                     on_ready: Callable[[Router], None] | None = None) -> None:
    """Serve until SIGTERM/SIGINT/SIGHUP or a stop request in the registry; remove the entry."""
    async with Router(config) as router:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, router.stopped.set)
        if on_ready is not None:
            on_ready(router)
        await router.stopped.wait()
