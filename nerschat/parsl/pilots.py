"""Pilots as Parsl apps, and a small API to run a group of them (or a pool) around a workflow.

Pipeline scripts (`pipelines/`) run their pilots as a pool by default (`pooled_pilots`):
service-mode jobs submitted through the config's `pilot_provider`, replaced before each
walltime and after a loss, restarted in place when their engine dies, so a run longer than
one walltime finishes on its own. `--fixed-pilots` runs plain `PilotGroup` apps on the
config's `pilots` executor instead (they drain at their block's walltime; nothing replaces
them).

A pilot app runs for its block's life. Parsl cannot cancel a running task, so the pilot
stops itself: on a stop request in the registry (`PilotGroup.stop()`), or ahead of the
block's SLURM walltime (the pilot reads its job's end time). A retried pilot simply
registers again under a new id; one that lost its block leaves a stale entry that clients
ignore.

    with PilotGroup("vllm", "local:gemma-3-270m", count=2, registry=reg) as group:
        endpoints = group.wait_ready()
        ...  # client apps
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import asdict
from typing import Any

from rich.console import Console

from nerschat.errors import FailureError, UsageError
from nerschat.pilot.pilot import PilotConfig, group_stop_id
from nerschat.registry import Endpoint, Registry

POOL_STOP_TIMEOUT = 300.0  # seconds for the pool's members to drain after the work


class PilotLaunchError(FailureError, RuntimeError):
    """A pilot app failed (or finished) before its server was ready."""


def run_pilot(config: dict[str, Any], registry_path: str, shared: bool = False) -> dict[str, Any]:
    """Run one pilot until it is stopped; the body of the pilot app (imports on the worker)."""
    import logging
    import os

    from nerschat.pilot.pilot import Pilot

    logging.basicConfig(level=logging.INFO)
    pilot = Pilot(PilotConfig(**config), Registry.of(registry_path, shared=shared))
    code = pilot.run()
    return {
        "exit_code": code,
        "endpoint_id": pilot.endpoint.id if pilot.endpoint else None,
        "stop_reason": pilot.stop.reason,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


class PilotGroup:
    """N pilots of one model as Parsl apps: start, wait until ready, stop."""

    def __init__(self, engine: str, model: str, count: int = 1, *,
                 registry: Registry | str | None = None, executor: str = "pilots",
                 **pilot_options: Any):
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.registry = Registry.of(registry)
        self.count = count
        self.executor = executor
        self.group = uuid.uuid4().hex[:10]
        self.config = PilotConfig(engine=engine, model=model, group=self.group, **pilot_options)
        self.futures: list[Future[dict[str, Any]]] = []

    def __repr__(self) -> str:
        return (f"PilotGroup({self.config.engine!r}, {self.config.model!r}, count={self.count}, "
                f"group={self.group!r}, executor={self.executor!r})")

    def start(self) -> list[Future[dict[str, Any]]]:
        """Submit the `count` pilot apps to the pilot executor; returns their futures.

        Each future resolves when its pilot stops, to a dict with `exit_code`,
        `endpoint_id`, `stop_reason`, `cuda_visible_devices` and `slurm_job_id`.
        """
        from nerschat.parsl.apps import pilot_app

        app = pilot_app(self.executor)
        config = asdict(self.config)
        self.futures = [app(config, str(self.registry.path), self.registry.shared)
                        for _ in range(self.count)]
        return self.futures

    def endpoints(self) -> list[Endpoint]:
        """This group's registry entries, in any state."""
        return [e for e in self.registry.scan().entries if e.extra.get("group") == self.group]

    def wait_ready(self, timeout: float = 900.0, poll: float = 0.5) -> list[Endpoint]:
        """Block until all `count` pilots are ready; raise if one fails or time runs out.

        `timeout` (seconds) is for start-up: it does not run while a pilot job of ours is
        still queued in SLURM (recorded as `pending` in the registry, or named `nerschat-*`).
        """
        from nerschat.client.readiness import our_pending_jobs
        from nerschat.slurm import PendingJobs

        if not self.futures:
            self.start()
        queued = PendingJobs()
        deadline = time.monotonic() + timeout
        while True:
            ready = [e for e in self.endpoints() if e.is_usable()]
            if len(ready) >= self.count:
                return ready
            for future in self.futures:
                if future.done():
                    raise PilotLaunchError(self._failure(future))
            if not self.endpoints() and our_pending_jobs(
                    self.registry.scan().entries, self.config.model, None, queued.get()):
                deadline = time.monotonic() + timeout  # start-up begins when the job runs
            if time.monotonic() > deadline:
                raise PilotLaunchError(
                    f"{len(ready)} of {self.count} {self.config.model} pilots ready after "
                    f"{timeout:.0f} s (group {self.group}; see 'nerschat ls')")
            time.sleep(poll)

    @staticmethod
    def _failure(future: Future[dict[str, Any]]) -> str:
        error = future.exception()
        if error is not None:
            return f"pilot app failed before ready: {type(error).__name__}: {error}"
        return f"pilot app finished before ready: {future.result()}"

    def stop(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """Ask every pilot of the group to drain; wait for the apps to return."""
        self.registry.request_stop(group_stop_id(self.group))
        results = []
        try:
            for future in self.futures:
                try:
                    results.append(future.result(timeout=timeout))
                except Exception as exc:  # noqa: BLE001 - report, keep stopping the others
                    results.append({"error": f"{type(exc).__name__}: {exc}"})
        finally:
            self.registry.remove(group_stop_id(self.group))
        return results

    def __enter__(self) -> PilotGroup:
        if not self.futures:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def smoke_test(model: str, registry_path: str | None = None, requests: int = 8,
               timeout: float = 120.0) -> dict[str, int]:
    """Client-app body: `requests` short chat completions through the registry.

    Returns how many went to each endpoint, so a pipeline can check from a client node
    that every pilot is reachable before it starts real work.
    """
    from nerschat.client.connect import connect, pool_of

    client = connect(model, registry=registry_path, wait_timeout=timeout)
    for i in range(requests):
        client.chat.completions.create(
            model=model, max_tokens=4, messages=[{"role": "user", "content": f"ping {i}"}])
    return {load.id: load.sent for load in pool_of(client).loads()}


@contextlib.contextmanager
def running_pilots(engine: str, model: str, count: int = 1, *,
                   registry: Registry | str | None = None, ready_timeout: float = 900.0,
                   executor: str = "pilots", console: Console | None = None,
                   **pilot_options: Any) -> Iterator[list[Endpoint]]:
    """Start `count` pilots (a Parsl config must be loaded), yield them ready, stop them after."""
    console = console or Console(stderr=True)
    group = PilotGroup(engine, model, count, registry=registry, executor=executor,
                       ready_timeout=ready_timeout, **pilot_options)
    with group:
        with console.status(f"starting {count} {model} pilot(s)"):
            ready = group.wait_ready(timeout=ready_timeout + 60)
        console.print(f"{len(ready)} pilot(s) ready: {', '.join(e.url for e in ready)}",
                      highlight=False)
        yield ready


@contextlib.contextmanager
def pooled_pilots(engine: str, model: str, replicas: int | tuple[int, int], *, site: str,
                  registry: Registry | str | None = None, ready_timeout: float = 900.0,
                  console: Console | None = None, kind: str | None = None,
                  walltime: str | None = None, max_restarts: int = 3
                  ) -> Iterator[list[Endpoint]]:
    """Keep `replicas` (or `(min, max)`) pilots ready as a pool around the block.

    `site` is a site name or config file whose `pilot_provider` submits the members.
    Yields the ready endpoints (clients should go through the registry: members change);
    afterwards drains the members and prints the pool's GPU-hours. `ready_timeout` is for
    start-up only (it does not run while a member is queued). Raises PoolError when the
    pool cannot get its replicas ready.
    """
    from nerschat.pool import Pool

    console = console or Console(stderr=True)
    pool = Pool(engine, model, replicas, registry=registry, site=site, kind=kind,
                walltime=walltime, max_restarts=max_restarts)
    low = replicas if isinstance(replicas, int) else replicas[0]
    pool.start()
    try:
        with console.status(f"pool {pool.id}: starting {low} {model} pilot(s)"):
            ready = pool.wait_ready(timeout=ready_timeout + 60, count_queue=False)
        console.print(f"pool {pool.id}: {len(ready)} pilot(s) ready: "
                      f"{', '.join(e.url for e in ready)} ('nerschat ls --pool' to watch)",
                      highlight=False)
        yield ready
    finally:
        with console.status(f"pool {pool.id}: draining its pilots"):
            pool.stop(timeout=POOL_STOP_TIMEOUT)
        state, use = pool.state, pool.usage()
        console.print(f"pool {pool.id}: {len(state.members)} pilot job(s), "
                      f"{len(state.handovers)} hand-over(s), {state.replaced_losses} loss(es) "
                      f"replaced, {sum(m.restarts for m in state.members)} engine restart(s); "
                      f"{use.gpu_hours:.3f} GPU-hours ({use.replica_hours:.3f} job hours)",
                      highlight=False)


def add_pool_arguments(parser: argparse.ArgumentParser) -> None:
    """The pool arguments of the pipeline scripts (after `add_pilot_arguments`).

    `--fixed-pilots` (plain Parsl pilot apps instead of a pool), `--max-pilots` (the pool
    scales up to this many while the run has items left), `--walltime` (of each pool member's
    job) and `--max-restarts` (engine restarts in place per member per 10 minutes).
    """
    parser.add_argument("--fixed-pilots", action="store_true",
                        help="run --pilots plain pilot apps on the config's `pilots` executor "
                             "instead of a pool (no hand-over before the walltime, no "
                             "replacement after a loss)")
    parser.add_argument("--max-pilots", type=int, default=None,
                        help="pool: scale up to this many pilots while the run has items "
                             "left [default: --pilots]")
    parser.add_argument("--walltime", default=None,
                        help="pool: walltime of each pilot job, HH:MM:SS [default: the "
                             "config's]; the pool hands over to a new job before it ends")
    parser.add_argument("--max-restarts", type=int, default=3,
                        help="pool: engine restarts in place per pilot per 10 minutes")


@contextlib.contextmanager
def pipeline_pilots(args: argparse.Namespace, console: Console | None = None,
                    **pilot_options: Any) -> Iterator[tuple[Registry, list[Endpoint]]]:
    """Run a pipeline script's pilots around its work, yielding (registry, ready endpoints).

    Loads `args.config` (for the client apps), keeps `args.pilots` pilots of
    `args.engine`/`args.model` ready as a pool whose members the config's `pilot_provider`
    submits (`pooled_pilots`), and afterwards stops the pool and cleans up Parsl. With
    `args.fixed_pilots`, starts plain pilot apps on the config's `pilots` executor instead.

    `args` carries what `nerschat.parsl.config.add_pilot_arguments` and `add_pool_arguments`
    add; `pilot_options` (e.g. `kind="embedding"`) go to the pilots. Raises
    PilotLaunchError (fixed pilots) or PoolError if the pilots do not become ready.
    """
    from nerschat.parsl.config import parsl_session, pilot_options_of

    registry = Registry.of(args.registry)
    with parsl_session(args.config) as module:
        if module is None:
            raise UsageError("pipeline_pilots needs a Parsl config file (--config)")
        if getattr(args, "fixed_pilots", True):
            options = {**pilot_options_of(module, args.engine), **pilot_options}
            with running_pilots(args.engine, args.model, args.pilots, registry=registry,
                                ready_timeout=args.ready_timeout, console=console,
                                **options) as ready:
                yield registry, ready
            return
        most = max(args.pilots, args.max_pilots or args.pilots)
        with pooled_pilots(args.engine, args.model, (args.pilots, most), site=args.config,
                           registry=registry, ready_timeout=args.ready_timeout,
                           console=console, kind=pilot_options.get("kind"),
                           walltime=args.walltime, max_restarts=args.max_restarts) as ready:
            yield registry, ready
