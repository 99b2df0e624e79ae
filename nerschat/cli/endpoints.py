"""`nerschat ls`, `wait` and `stop`: looking at and steering what the registry holds.

`ls` shows each entry's phase in words: a pending entry's queued job with SLURM's reason and
expected start, a starting one's node, time since start and last server-log line. `stop`
drains, then cancels (`scancel`) the jobs of pilots still there when the drain budget ends;
jobs still in the queue are cancelled only with `--cancel-pending`.

Every value shown comes from files other people may have written: it is printed as plain
text (no markup), with control characters escaped, so nothing in a registry can drive the
terminal.
"""

from __future__ import annotations

import json
import re
import threading
import time

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nerschat.cli.common import (
    FiniteFloat,
    console,
    fail,
    format_age,
    one_line,
    open_registry,
    registry_option,
    shared_option,
)
from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints
from nerschat.pilot.describe import describe_phase
from nerschat.registry import Endpoint, Registry, RegistryError, RegistryProblem, is_safe_name
from nerschat.server_log import last_line
from nerschat.slurm import QueuedJob, queued_jobs

STATE_STYLE = {"pending": "cyan", "ready": "green", "starting": "yellow",
               "draining": "magenta", "unhealthy": "red", "stale": "red", "expired": "red"}


def _cell(value: object) -> Text:
    return Text(one_line(str(value)))


def print_problems(problems: list[RegistryProblem]) -> None:
    """One `skipped FILE: reason` line per problem, on stderr, escaped."""
    for problem in problems:
        console.print(Text.assemble(("skipped", "yellow"), " ", one_line(str(problem))),
                      highlight=False, soft_wrap=True)


def phase_details(registry: Registry, entries: list[Endpoint], now: float
                  ) -> tuple[dict[str, str], dict[str, QueuedJob] | None]:
    """Each entry's phase in words (`describe_phase`), and what SLURM said of pending jobs.

    One `squeue` call for all pending entries' jobs (none without any); the server log's last
    line for starting ones.
    """
    jobs = {e.slurm_job_id for e in entries if e.state == "pending" and e.slurm_job_id}
    queue = queued_jobs(jobs) if jobs else {}
    details = {e.id: describe_phase(e, now, queue,
                                    last_line(registry, e.id) if e.state == "starting" else None)
               for e in entries}
    return details, queue


def _queue_dict(entry: Endpoint, queue: dict[str, QueuedJob] | None) -> dict[str, object] | None:
    if entry.state != "pending" or not entry.slurm_job_id or queue is None:
        return None
    job = queue.get(entry.slurm_job_id)
    if job is None:
        return {"job_id": entry.slurm_job_id, "state": "GONE"}
    return {"job_id": job.job_id, "state": job.state, "reason": job.reason or None,
            "expected_start": job.expected_start, "nodes": job.nodes or None}


@click.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (keys hidden).")
@click.option("--prune", is_flag=True,
              help="Remove stale entries (dead pilots) and pending entries of jobs that left "
                   "the SLURM queue without starting.")
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
            from nerschat.parsl.launch import forget_gone

            for endpoint_id in forget_gone(registry):
                console.print(Text(one_line(f"pruned pending entry {endpoint_id}: its job left "
                                            "the queue without starting it")), highlight=False)
        scan = registry.scan()
    except RegistryError as exc:
        fail(str(exc), code=exc.exit_code)
    now = time.time()
    entries = [e for e in scan.entries
               if (model is None or e.model == model) and (kind is None or e.kind == kind)]
    details, queue = phase_details(registry, entries, now)
    if as_json:
        rows = [{**e.public_dict(), "status": e.status(now), "detail": details[e.id],
                 "queue": _queue_dict(e, queue)} for e in entries]
        click.echo(json.dumps(rows, indent=1))
        print_problems(scan.problems)
        return
    table = Table(title=Text(one_line(f"nerschat registry {registry.path}")),
                  title_justify="left")
    for column in ("id", "kind", "model", "url", "state", "age", "heartbeat", "job", "time left",
                   "detail"):
        table.add_column(column, no_wrap=column in ("id", "url", "state"))
    for e in entries:
        table.add_row(*_row(e, now), _cell(details[e.id]))
    out = Console()  # tables go to stdout; wide when piped, so ids are not cut
    if not out.is_terminal:
        out.width = 260
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
        Text(shown, style=STATE_STYLE.get(status, "")), Text(age),
        Text(format_age(now - e.heartbeat_at)), _cell(e.slurm_job_id or "-"),
        Text(format_age(e.time_left(now))),
    ]


@click.command()
@click.option("--model", default=None, help="Served model name to wait for.")
@click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None)
@click.option("--timeout", type=FiniteFloat(0.0, no_limit=True), default=600.0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No spinner.")
@click.option("--router", "router", is_flag=True,
              help="Wait for a `nerschat router`; print its URL (and on stderr where its key is).")
@registry_option
def wait(registry_path: str | None, model: str | None, kind: str | None,
         timeout: float, quiet: bool, router: bool) -> None:
    """Wait until a matching endpoint is ready; print its base URL.

    While waiting it says what it sees (the queued job with SLURM's reason and expected
    start, a starting pilot's node, time and last log line): on a spinner in a terminal,
    else one stderr line per change (-q: nothing).

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
    shown = [""]  # the last status printed, digits masked
    shown_at = [0.0]

    def on_status(status: str) -> None:
        last[0] = status
        if spinner is not None:
            spinner.update(Text(one_line(f"waiting: {status}")))
        elif not quiet:  # a batch log: one line per change of phase, else once a minute
            shape = re.sub(r"\d+", "#", status)
            if shape != shown[0] or time.monotonic() - shown_at[0] >= 60:
                console.print(Text(one_line(f"waiting: {status}")), highlight=False,
                              soft_wrap=True)
                shown[0], shown_at[0] = shape, time.monotonic()

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
@click.option("--cancel-pending", is_flag=True,
              help="Also cancel (scancel) jobs still in the queue and remove their pending "
                   "entries [default: leave queued jobs alone].")
@click.option("--wait/--no-wait", "wait_gone", default=True, show_default=True,
              help="Wait until the entries are gone; cancel the jobs of pilots still there "
                   "when --timeout ends.")
@click.option("--timeout", type=FiniteFloat(0.0, no_limit=True), default=120.0, show_default=True,
              help="Drain budget, seconds: pilots of SLURM jobs still there after it are "
                   "cancelled with scancel.")
@registry_option
@shared_option
def stop(registry_path: str | None, shared: bool, endpoint_ids: tuple[str, ...],
         stop_all: bool, model: str | None, cancel_pending: bool, wait_gone: bool,
         timeout: float) -> None:
    """Ask pilots to drain and stop their servers; cancel the jobs that outlast the drain."""
    from nerschat.parsl.launch import LaunchError, queued_job_groups

    registry = open_registry(registry_path, shared)
    try:
        targets = _targets(registry, endpoint_ids, stop_all, model)
        if not targets:
            if not (stop_all or model):
                fail("give endpoint ids, --model or --all", code=2)
            console.print("nothing to stop")
            return
        queued = queued_job_groups(registry, targets)
        if queued and not cancel_pending:
            queued = _forget_jobs_gone(registry, queued)
        in_queue = {i for ids in queued.values() for i in ids}
        if queued and not cancel_pending:
            named = [i for i in endpoint_ids if i in in_queue]
            jobs = ", ".join(queued)
            if named:
                fail(f"{', '.join(named)}: job {jobs} has not started yet: pass "
                     "--cancel-pending to cancel it", code=2)
            console.print(Text(one_line(f"left in the queue: job {jobs} ({len(in_queue)} "
                                        "pending endpoint(s)); --cancel-pending cancels them")),
                          highlight=False)
        running = [t for t in targets if t not in in_queue]
        for endpoint_id in running:
            registry.request_stop(endpoint_id)
        if running:
            console.print(f"stop requested for {len(running)} endpoint(s)")
        if queued and cancel_pending:
            _cancel_queued(registry, list(in_queue))
        if not wait_gone or not running:
            return
        left = _wait_gone(registry, running, timeout)
        if left:
            _cancel_after_drain(registry, left, timeout)
        console.print("stopped")
    except (RegistryError, LaunchError) as exc:
        fail(str(exc), code=exc.exit_code)


def _forget_jobs_gone(registry: Registry, groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Remove the pending entries of jobs no longer in the queue; the groups still queued."""
    queue = queued_jobs(list(groups))
    if queue is None:
        return groups  # SLURM cannot say: keep them as they are
    for job in [j for j in groups if j not in queue]:
        for endpoint_id in groups.pop(job):
            registry.remove(endpoint_id)
            console.print(Text(one_line(f"removed pending entry {endpoint_id}: job {job} left "
                                        "the queue without starting it")), highlight=False)
    return groups


def _cancel_queued(registry: Registry, endpoint_ids: list[str]) -> None:
    from nerschat.parsl.launch import cancel_pending

    for job_id in cancel_pending(registry, endpoint_ids):
        console.print(Text(one_line(f"cancelled queued job {job_id}")), highlight=False)


def _wait_gone(registry: Registry, targets: list[str], timeout: float) -> list[Endpoint]:
    """Wait up to `timeout` s for the entries to go; the ones still there (not stale)."""
    deadline = time.monotonic() + timeout
    while True:
        current = {e.id: e for e in registry.scan().entries}
        left = [current[t] for t in targets if t in current and not current[t].is_stale()]
        if not left:
            for endpoint_id in targets:  # stale ones have no pilot left to clean up
                if endpoint_id in current:
                    registry.remove(endpoint_id)
                else:
                    registry.cancel_stop(endpoint_id)
            return []
        if time.monotonic() >= deadline:
            return left
        time.sleep(min(0.3, max(0.0, deadline - time.monotonic())))


def _cancel_after_drain(registry: Registry, left: list[Endpoint], timeout: float,
                        gone_within: float = 90.0) -> None:
    """The drain budget ended: `scancel` the SLURM jobs of the pilots still there.

    Once the jobs have left the queue (at most `gone_within` s: SLURM's KillWait), their
    entries are removed. Pilots without a job (local processes) cannot be cancelled: exit 1
    naming them.
    """
    from nerschat.parsl.launch import cancel_jobs
    from nerschat.slurm import queued_jobs

    jobs = sorted({e.slurm_job_id for e in left if e.slurm_job_id})
    cancelled, gone, refused = cancel_jobs(jobs)
    for line in refused:
        console.print(Text(one_line(f"warning: {line}")), style="yellow", highlight=False)
    if cancelled:
        console.print(Text(one_line(f"drain budget of {timeout:.0f} s ended: cancelled job "
                                    f"{', '.join(cancelled)} (scancel)")), highlight=False)
    deadline = time.monotonic() + gone_within
    while cancelled and time.monotonic() < deadline:
        queue = queued_jobs(cancelled)
        if queue is not None and not queue:
            break
        time.sleep(1.0)
    ended = set(cancelled) | set(gone)
    for entry in left:
        if entry.slurm_job_id in ended:
            registry.remove(entry.id)
    still = [e.id for e in left if e.slurm_job_id not in ended]
    if still:
        fail(f"still running after {timeout:.0f} s: {', '.join(still)}" + (
            "" if all(e.slurm_job_id for e in left) else
            " (pilots outside SLURM: stop their processes by pid, see 'nerschat ls --json')"))
