"""`nerschat ls`, `wait` and `stop`: looking at and steering what the registry holds."""

from __future__ import annotations

import json
import time

import click
from rich.console import Console
from rich.table import Table

from nerschat.cli.common import console, fail, format_age, open_registry, registry_option
from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints
from nerschat.registry import RegistryError

STATE_STYLE = {"pending": "cyan", "ready": "green", "starting": "yellow", "draining": "magenta",
               "stale": "red", "unhealthy": "red"}


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys hidden).")
@click.option("--prune", is_flag=True, help="Remove stale entries (dead pilots).")
@click.option("--model", default=None)
@click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None)
@registry_option
def ls(registry_path: str | None, shared: bool, as_json: bool, prune: bool,
       model: str | None, kind: str | None) -> None:
    """List registered endpoints."""
    registry = open_registry(registry_path, shared)
    try:
        if prune:
            for entry in registry.prune():
                console.print(f"pruned stale entry {entry.id}", highlight=False)
        scan = registry.scan()
    except RegistryError as exc:
        fail(str(exc))
    now = time.time()
    entries = [e for e in scan.entries
               if (model is None or e.model == model) and (kind is None or e.kind == kind)]
    if as_json:
        rows = [{**e.public_dict(), "status": e.status(now)} for e in entries]
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table(title=f"nerschat registry {registry.path}", title_justify="left")
    for column in ("id", "kind", "model", "url", "state", "age", "heartbeat", "job", "time left"):
        table.add_column(column, no_wrap=column in ("id", "url", "state"))
    for e in entries:
        status = e.status(now)
        age = format_age(now - e.started_at) if e.started_at else "-"
        shown = f"{status} {age}" if status == "starting" else status  # vLLM takes minutes
        table.add_row(
            e.id, e.kind, e.model, e.url, f"[{STATE_STYLE[status]}]{shown}[/]", age,
            format_age(now - e.heartbeat_at), e.slurm_job_id or "-", format_age(e.time_left(now)),
        )
    out = Console()  # tables go to stdout; wide when piped, so ids are not cut
    if not out.is_terminal:
        out.width = 200
    out.print(table)
    if not entries:
        out.print("no endpoints registered", style="dim")
    for problem in scan.problems:
        console.print(f"[yellow]skipped[/yellow] {problem}", highlight=False)


@click.command()
@click.option("--model", default=None, help="Served model name to wait for.")
@click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None)
@click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No spinner.")
@registry_option
def wait(registry_path: str | None, shared: bool, model: str | None, kind: str | None,
         timeout: float, quiet: bool) -> None:
    """Wait until a matching endpoint is ready; print its base URL."""
    if model is None and kind is None:
        fail("give --model or --kind", code=2)
    registry = open_registry(registry_path, shared)
    try:
        if quiet or not console.is_terminal:
            ready = wait_for_endpoints(registry, model, kind, timeout)
        else:
            with console.status("waiting for an endpoint") as spinner:
                ready = wait_for_endpoints(
                    registry, model, kind, timeout,
                    on_status=lambda s: spinner.update(f"waiting: {s}"),
                )
    except EndpointTimeout as exc:
        fail(str(exc))
    except RegistryError as exc:
        fail(str(exc))
    click.echo(ready[0].url)


@click.command()
@click.argument("endpoint_ids", nargs=-1)
@click.option("--all", "stop_all", is_flag=True, help="Stop every registered endpoint.")
@click.option("--model", default=None, help="Stop every endpoint of this model.")
@click.option("--wait/--no-wait", "wait_gone", default=True, show_default=True,
              help="Wait until the entries are gone.")
@click.option("--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True)
@registry_option
def stop(registry_path: str | None, shared: bool, endpoint_ids: tuple[str, ...], stop_all: bool,
         model: str | None, wait_gone: bool, timeout: float) -> None:
    """Ask pilots to drain and stop their servers."""
    registry = open_registry(registry_path, shared)
    entries = registry.scan().entries
    if stop_all:
        targets = [e.id for e in entries]
    elif model:
        targets = [e.id for e in entries if e.model == model]
    else:
        targets = list(endpoint_ids)
        known = {e.id for e in entries}
        missing = [t for t in targets if t not in known]
        if missing:
            fail(f"no endpoint {', '.join(missing)} in {registry.path}")
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
        console.print(f"cancelled queued job {job_id}")
    if not wait_gone:
        return
    deadline = time.monotonic() + timeout
    left = targets
    while time.monotonic() < deadline:
        current = {e.id: e for e in registry.scan().entries}
        left = [t for t in targets if t in current and not current[t].is_stale()]
        if not left:
            for endpoint_id in targets:  # stale ones have no pilot left to clean up
                registry.remove(endpoint_id)
            console.print("stopped")
            return
        time.sleep(0.3)
    fail(f"still running after {timeout:.0f} s: {', '.join(left)}")
