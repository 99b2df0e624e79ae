"""`nerschat ls`, `wait` and `stop`: looking at and steering what the registry holds.

Every value shown comes from files other people may have written: it is printed as plain
text (no markup), with control characters escaped, so nothing in a registry can drive the
terminal.
"""

from __future__ import annotations

import json
import threading
import time

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nerschat.cli.common import (
    console,
    fail,
    format_age,
    one_line,
    open_registry,
    registry_option,
    shared_option,
)
from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints
from nerschat.registry import Endpoint, Registry, RegistryError, RegistryProblem, is_safe_name

STATE_STYLE = {"pending": "cyan", "ready": "green", "starting": "yellow",
               "draining": "magenta", "stale": "red", "unhealthy": "red"}


def _cell(value: object) -> Text:
    return Text(one_line(str(value)))


def print_problems(problems: list[RegistryProblem]) -> None:
    """One `skipped FILE: reason` line per problem, on stderr, escaped."""
    for problem in problems:
        console.print(Text.assemble(("skipped", "yellow"), " ", one_line(str(problem))),
                      highlight=False, soft_wrap=True)


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys hidden).")
@click.option("--prune", is_flag=True, help="Remove stale entries (dead pilots).")
@click.option("--model", default=None)
@click.option("--kind", type=click.Choice(["llm", "embedding", "router"]), default=None)
@click.option("--pool", "pools", is_flag=True,
              help="List the running pools instead: desired replicas, members' jobs and "
                   "phases, GPU-hours, items per GPU-hour, GPU-hours the rest needs.")
@registry_option
def ls(registry_path: str | None, as_json: bool, prune: bool,
       model: str | None, kind: str | None, pools: bool) -> None:
    """List registered endpoints (files that are not valid, trusted entries are reported)."""
    registry = open_registry(registry_path)
    if pools:
        from nerschat.cli.pool import print_pools

        print_pools(registry, as_json)
        return
    try:
        if prune:
            for entry in registry.prune():
                console.print(Text(f"pruned stale entry {entry.id}"), highlight=False)
        scan = registry.scan()
    except RegistryError as exc:
        fail(str(exc), code=exc.exit_code)
    now = time.time()
    entries = [e for e in scan.entries
               if (model is None or e.model == model) and (kind is None or e.kind == kind)]
    if as_json:
        rows = [{**e.public_dict(), "status": e.status(now)} for e in entries]
        click.echo(json.dumps(rows, indent=1))
        print_problems(scan.problems)
        return
    table = Table(title=Text(one_line(f"nerschat registry {registry.path}")),
                  title_justify="left")
    for column in ("id", "kind", "model", "url", "state", "age", "heartbeat", "job", "time left"):
        table.add_column(column, no_wrap=column in ("id", "url", "state"))
    for e in entries:
        table.add_row(*_row(e, now))
    out = Console()  # tables go to stdout; wide when piped, so ids are not cut
    if not out.is_terminal:
        out.width = 200
    out.print(table)
    if not entries:
        out.print("no endpoints registered", style="dim")
    print_problems(scan.problems)


def _row(e: Endpoint, now: float) -> list[Text]:
    status = e.status(now)
    age = format_age(now - e.started_at) if e.started_at else "-"
    shown = f"{status} {age}" if status == "starting" else status  # vLLM takes minutes
    return [
        _cell(e.id), _cell(e.kind), _cell(e.model), _cell(e.url),
        Text(shown, style=STATE_STYLE[status]), Text(age),
        Text(format_age(now - e.heartbeat_at)), _cell(e.slurm_job_id or "-"),
        Text(format_age(e.time_left(now))),
    ]


@click.command()
@click.option("--model", default=None, help="Served model name to wait for.")
@click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None)
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No spinner.")
@click.option("--router", "router", is_flag=True,
              help="Wait for a `nerschat router`; print its URL (and on stderr where its key is).")
@registry_option
def wait(registry_path: str | None, model: str | None, kind: str | None,
         timeout: float, quiet: bool, router: bool) -> None:
    """Wait until a matching endpoint is ready; print its base URL.

    Returns by `--timeout` whatever the registry or SLURM do (the wait runs in a thread
    that is abandoned at the deadline).
    """
    if router:
        from nerschat.cli.router import echo_router

        echo_router(open_registry(registry_path), timeout)
        return
    if model is None and kind is None:
        fail("give --model or --kind", code=2)
    registry = open_registry(registry_path)
    result: dict[str, object] = {}
    last = ["nothing seen yet"]

    def on_status(status: str) -> None:
        last[0] = status
        if spinner is not None:
            spinner.update(Text(one_line(f"waiting: {status}")))

    def run() -> None:
        try:
            result["ready"] = wait_for_endpoints(registry, model, kind, timeout,
                                                 on_status=on_status)
        except Exception as exc:  # noqa: BLE001 - handed to the main thread
            result["error"] = exc

    spinner = None if quiet or not console.is_terminal else console.status("waiting")
    worker = threading.Thread(target=run, name="nerschat-wait", daemon=True)
    if spinner is not None:
        spinner.start()
    try:
        worker.start()
        worker.join(timeout + 1.0)
    finally:
        if spinner is not None:
            spinner.stop()
    if worker.is_alive():
        fail(f"no ready endpoint after {timeout:.0f} s: {last[0]}")
    error = result.get("error")
    if isinstance(error, (EndpointTimeout, RegistryError)):
        fail(str(error), code=error.exit_code)
    if isinstance(error, BaseException):
        raise error
    ready = result["ready"]
    assert isinstance(ready, list)
    click.echo(ready[0].url)


def _targets(registry: Registry, endpoint_ids: tuple[str, ...], stop_all: bool,
             model: str | None) -> list[str]:
    scan = registry.scan()
    if stop_all:
        return [e.id for e in scan.entries]
    if model:
        return [e.id for e in scan.entries if e.model == model]
    bad = [i for i in endpoint_ids if not is_safe_name(i)]
    if bad:
        fail(f"not an endpoint id: {', '.join(repr(i) for i in bad)} (see 'nerschat ls')",
             code=2)
    known = {e.id for e in scan.entries}
    problems = {p.path.name: p.reason for p in scan.problems}
    missing = []
    for endpoint_id in endpoint_ids:
        if endpoint_id in known:
            continue
        reason = problems.get(f"{endpoint_id}.json")
        if reason is None:
            missing.append(endpoint_id)
        else:  # a stop request only names the file: harmless even for a doubtful entry
            console.print(Text(one_line(f"warning: {endpoint_id}: {reason}")), style="yellow",
                          highlight=False)
    if missing:
        fail(f"no endpoint {', '.join(missing)} in {registry.path}")
    return list(endpoint_ids)


@click.command()
@click.argument("endpoint_ids", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="Stop every registered endpoint.")
@click.option("--model", default=None, help="Stop every endpoint of this model.")
@click.option("--wait/--no-wait", "wait_gone", default=True, show_default=True,
              help="Wait until the entries are gone.")
@click.option("--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True)
@registry_option
@shared_option
def stop(registry_path: str | None, shared: bool, endpoint_ids: tuple[str, ...],
         stop_all: bool, model: str | None, wait_gone: bool, timeout: float) -> None:
    """Ask pilots to drain and stop their servers."""
    registry = open_registry(registry_path, shared)
    try:
        targets = _targets(registry, endpoint_ids, stop_all, model)
        if not targets:
            if not (stop_all or model):
                fail("give endpoint ids, --model or --all", code=2)
            console.print("nothing to stop")
            return
        for endpoint_id in targets:
            registry.request_stop(endpoint_id)
        console.print(f"stop requested for {len(targets)} endpoint(s)")
        from nerschat.parsl.launch import cancel_pending  # jobs still queued: scancel them

        for job_id in cancel_pending(registry, targets):
            console.print(Text(one_line(f"cancelled queued job {job_id}")), highlight=False)
        if not wait_gone:
            return
        deadline = time.monotonic() + timeout
        left = targets
        while time.monotonic() < deadline:
            current = {e.id: e for e in registry.scan().entries}
            left = [t for t in targets if t in current and not current[t].is_stale()]
            if not left:
                for endpoint_id in targets:  # stale ones have no pilot left to clean up
                    if endpoint_id in current:
                        registry.remove(endpoint_id)
                    else:
                        registry.cancel_stop(endpoint_id)
                console.print("stopped")
                return
            time.sleep(min(0.3, max(0.0, deadline - time.monotonic())))
    except RegistryError as exc:
        fail(str(exc), code=exc.exit_code)
    fail(f"still running after {timeout:.0f} s: {', '.join(left)}")
