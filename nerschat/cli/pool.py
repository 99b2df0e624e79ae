"""`nerschat pool start|status|stop`: replicas kept ready past any one walltime."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
import uuid
from types import FrameType

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nerschat.cli.common import (
    console,
    format_age,
    one_line,
    open_registry,
    registry_option,
    shared_option,
)
from nerschat.cli.launch import job_options
from nerschat.errors import FailureError, UsageError
from nerschat.parsl.launch import SITES
from nerschat.pool import state as store
from nerschat.pool.accounting import Usage, member_hours, usage
from nerschat.pool.controller import Pool, Timing, pool_progress
from nerschat.pool.progress import remaining, scan_reports
from nerschat.registry import Registry, RegistryProblem

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `6h`, `2d` or `HH:MM:SS` as seconds; UsageError otherwise."""
    text = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text)
    if match:
        return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    parts = text.split(":")
    if 2 <= len(parts) <= 3 and all(p.isdigit() for p in parts):
        seconds = 0.0
        for part in parts:
            seconds = seconds * 60 + int(part)
        return seconds
    raise UsageError(f"--duration {text!r} is not seconds, 15m, 6h, 2d or HH:MM:SS")


def parse_replicas(text: str) -> tuple[int, int]:
    """`N` or `MIN..MAX`; UsageError otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?", text)
    if not match:
        raise UsageError(f"--replicas {text!r} is not N or MIN..MAX (e.g. 2..8)")
    low = int(match.group(1))
    high = int(match.group(2)) if match.group(2) else low
    if low < 1 or high < low:
        raise UsageError(f"--replicas {text!r}: need 1 <= MIN <= MAX")
    return low, high


@click.group()
def pool() -> None:
    """Pools: keep N replicas ready for a duration, handing over before each walltime."""


@pool.command(context_settings={"show_default": True})
@click.option("--engine", type=click.Choice(["vllm", "tei", "stub"]), required=True)
@click.option("--model", required=True, help="Model to serve (HF id or path).")
@click.option("--replicas", default="1", metavar="N|MIN..MAX",
              help="Replicas kept ready; MIN..MAX scales by the engines' waiting requests.")
@click.option("--duration", default=None, metavar="15m|6h|HH:MM:SS",
              help="Stop the pool after this long [default: until `nerschat pool stop`].")
@click.option("--gpus-per-replica", type=click.IntRange(min=0), default=None,
              help="GPUs per server [default: 1 for vllm/tei on a GPU site].")
@click.option("--site", default=None, metavar="|".join(SITES), help="As for `nerschat launch`.")
@job_options
@click.option("--ttl", type=click.FloatRange(min=0.5), default=15.0,
              help="Heartbeat TTL of the members' entries, seconds (a frozen member is "
                   "replaced after it).")
@click.option("--drain-before", type=click.FloatRange(min=0), default=30.0,
              help="A member drains on its own this many seconds before its walltime "
                   "(the pool hands over earlier).")
@click.option("--max-restarts", type=click.IntRange(min=0), default=3,
              help="A member's pilot restarts its dead or stuck engine in place at most this "
                   "many times per 10 minutes; past that the pool replaces the member.")
@click.option("--lead-floor", type=click.FloatRange(min=0), default=60.0,
              help="Least lead time (s) a replacement is submitted before it is needed; "
                   "the pool learns more from its members' queue and start-up times.")
@click.option("--overlap", type=click.FloatRange(min=0), default=10.0,
              help="Seconds a replacement is ready before the member it replaces drains.")
@click.option("--period", type=click.FloatRange(min=0.1), default=1.0,
              help="Seconds between controller rounds.")
@click.option("--no-check", is_flag=True, help="Skip the pre-flight checks.")
@click.option("--id", "pool_id", default=None, help="Pool id [default: pool-RANDOM].")
@click.option("--detach", is_flag=True,
              help="Run the controller in the background (log in the registry's logs/); "
                   "print the pool id and return.")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
@registry_option
@shared_option
def start(registry_path: str | None, shared: bool, engine: str, model: str, replicas: str,
          duration: str | None, gpus_per_replica: int | None, site: str | None,
          account: str | None, qos: str | None, walltime: str | None, constraint: str | None,
          image: str | None, kind: str | None, served_name: str | None,
          options: tuple[str, ...], ttl: float | None, drain_before: float, max_restarts: int,
          lead_floor: float,
          overlap: float, period: float, no_check: bool, pool_id: str | None, detach: bool,
          extra_args: tuple[str, ...]) -> None:
    """Keep replicas of a model ready; runs the controller until the pool stops.

    Members are `nerschat launch` jobs; each is replaced before its walltime (the old one
    drains once the new one is ready) and after a loss (scancel, node failure, crash).
    Ctrl-C (or `nerschat pool stop ID` from anywhere) drains every member and exits. Prints
    the pool id on stdout.
    """
    registry = open_registry(registry_path, shared)
    low, high = parse_replicas(replicas)
    seconds = parse_duration(duration) if duration else None
    if detach:
        _detach(registry, pool_id or f"pool-{uuid.uuid4().hex[:6]}")
        return
    the_pool = Pool(
        engine, model, (low, high), registry=registry, duration=seconds, pool_id=pool_id,
        timing=Timing(period=period, lead_floor=lead_floor, overlap=overlap),
        gpus_per_replica=gpus_per_replica, site=site, walltime=walltime, account=account,
        qos=qos, constraint=constraint, image=image, kind=kind, served_name=served_name,
        options=options, extra_args=extra_args, ttl=ttl, drain_before=drain_before,
        max_restarts=max_restarts, check=not no_check,
    )
    run_in_foreground(the_pool, f"{replicas} {engine}:{model}")


def run_in_foreground(the_pool: Pool, what: str) -> None:
    """Print the pool id, run its controller; the first Ctrl-C/SIGTERM drains the members."""
    registry = the_pool.registry
    click.echo(the_pool.id)
    sys.stdout.flush()
    console.print(f"pool {the_pool.id}: keeping {what} ready; `nerschat pool status "
                  f"{the_pool.id}` to watch, Ctrl-C or `nerschat pool stop {the_pool.id}` to "
                  "stop", highlight=False)
    signals = {"count": 0}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            raise KeyboardInterrupt
        console.print(f"pool {the_pool.id}: {signal.Signals(signum).name}, draining the "
                      "members (again to leave them running)", highlight=False)
        store.request_stop(registry, the_pool.id)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    final = the_pool.run()
    summary = usage(final, time.time(), pool_progress(registry, final, time.time()))
    console.print(f"pool {final.id} stopped: {len(final.members)} members, "
                  f"{len(final.handovers)} hand-overs, {final.replaced_losses} losses replaced, "
                  f"{summary.gpu_hours:.3f} GPU-hours", highlight=False)
    if final.error:
        raise FailureError(f"pool {final.id}: {final.error}")


def keep_ready(registry: Registry, engine: str | None, model: str | None, replicas: int,
               gpus_per_replica: int | None, packs: tuple[str, ...], *,
               drain_before: float | None, no_check: bool, **launch_options: object) -> None:
    """`nerschat launch --keep`: the same replicas, as a pool in the foreground."""
    if packs or not (engine and model):
        raise UsageError("--keep needs --engine and --model (a pool keeps copies of one "
                         "server; start one pool per model of a --pack)")
    if launch_options.get("ttl") is None:
        launch_options["ttl"] = 15.0
    the_pool = Pool(engine, model, replicas, registry=registry,
                    gpus_per_replica=gpus_per_replica,
                    drain_before=30.0 if drain_before is None else drain_before,
                    check=not no_check, **launch_options)  # type: ignore[arg-type]
    run_in_foreground(the_pool, f"{replicas} {engine}:{model}")


def _detach(registry: Registry, pool_id: str, argv: list[str] | None = None) -> None:
    """Re-run this command without --detach, in its own session, logging to the registry."""
    store.check_pool_id(pool_id)
    registry.ensure()
    if argv is None:
        argv = [a for a in sys.argv[1:] if a != "--detach"] + ["--id", pool_id]
    log = registry.log_dir / f"{pool_id}.log"
    flags = (os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_NOFOLLOW
             | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        fd = os.open(log, flags, registry.file_mode)
    except OSError as exc:
        raise UsageError(f"{log}: cannot write the controller's log ({exc.strerror}; a "
                         "symbolic link is refused)") from None
    with os.fdopen(fd, "ab") as handle:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UsageError(f"{log}: not your regular file; remove it or use another --id")
        os.fchmod(fd, registry.file_mode)
        process = subprocess.Popen(
            [sys.executable, "-m", "nerschat.cli.main", *argv],
            stdin=subprocess.DEVNULL, stdout=handle, stderr=handle, start_new_session=True)
    deadline = time.monotonic() + 60
    path = store.state_path(registry, pool_id)
    before = path.stat().st_mtime if path.exists() else 0.0
    while not path.exists() or path.stat().st_mtime == before:
        if process.poll() is not None:
            raise UsageError(f"pool controller exited with status {process.returncode}; "
                             f"see {log}")
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    click.echo(pool_id)
    console.print(f"pool {pool_id}: controller pid {process.pid}, log {log}", highlight=False)


@pool.command()
@click.argument("pool_id")
@click.option("--detach", is_flag=True, help="Run the controller in the background.")
@registry_option
@shared_option
def resume(registry_path: str | None, shared: bool, pool_id: str, detach: bool) -> None:
    """Take over a pool whose controller died: its members are adopted, not restarted."""
    registry = open_registry(registry_path, shared)
    state = store.read_state(registry, pool_id)
    if state.status == "stopped":
        raise UsageError(f"pool {pool_id} has stopped; start a new one with 'nerschat pool "
                         "start'")
    if time.time() - state.heartbeat_at < 10:
        raise UsageError(f"pool {pool_id}: its controller ({state.controller_host}:"
                         f"{state.controller_pid}) ran {time.time() - state.heartbeat_at:.0f} s "
                         "ago; stop it first or wait")
    if detach:
        _detach(registry, pool_id, ["pool", "resume", pool_id, *_registry_args(registry)])
        return
    the_pool = Pool.resume(registry, pool_id)
    run_in_foreground(the_pool, f"{state.desired} {state.engine}:{state.model}")


def _registry_args(registry: Registry) -> list[str]:
    return ["--registry", str(registry.path), *(["--shared"] if registry.shared else [])]


def status_dict(registry: Registry, state: store.PoolState, now: float) -> dict[str, object]:
    """A pool's state with its usage, ready count and workflows' items left (`--json`)."""
    data = state.to_dict()
    data["usage"] = usage(state, now, pool_progress(registry, state, now)).to_dict()
    data["ready"] = sum(1 for m in state.members if m.phase == "ready" and m.drain_at is None)
    data["controller_age_s"] = round(now - state.heartbeat_at, 1)
    work = remaining(registry, state.serves, now)
    data["workflows"] = None if work is None else {
        "count": work.workflows, "done": work.done, "total": work.total,
        "items_per_s": work.rate, "remaining": work.remaining, "eta_s": work.eta_s()}
    return data


@pool.command()
@click.argument("pool_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the pools as JSON on stdout.")
@click.option("--all", "show_all", is_flag=True, help="Also pools that have stopped.")
@registry_option
def status(registry_path: str | None, pool_id: str | None, as_json: bool,
           show_all: bool) -> None:
    """Show pools: desired replicas, members and their phases, hand-overs, GPU-hours."""
    registry = open_registry(registry_path)
    if pool_id:
        states = [store.read_state(registry, pool_id)]
        print_pools(registry, as_json, states=states)
    else:
        print_pools(registry, as_json, show_all=show_all)


def print_pools(registry: Registry, as_json: bool = False, *, show_all: bool = False,
                states: list[store.PoolState] | None = None) -> None:
    """The pools of a registry (`nerschat ls --pool`, `nerschat pool status`), on stdout.

    Per pool: desired replicas (min..max), each member's job, phase and restarts, GPU-hours
    used so far, items per GPU-hour and the GPU-hours the rest needs (where a workflow
    reported its progress). Everything read from files is printed as plain, escaped text.
    """
    now = time.time()
    problems: list[RegistryProblem] = []
    if states is None:
        scan = store.scan_states(registry)
        states = [s for s in scan.states if show_all or s.status != "stopped"]
        problems = scan.problems
    problems = problems + scan_reports(registry)[1]
    if as_json:
        click.echo(json.dumps([status_dict(registry, s, now) for s in states], indent=1))
        _print_problems(problems)
        return
    _print_problems(problems)
    out = Console()
    if not out.is_terminal:
        out.width = 200
    if not states:
        out.print(Text(one_line(f"no running pools in {registry.path}")), style="dim")
        return
    for state in states:
        _print_state(out, registry, state, now)


def _print_problems(problems: list[RegistryProblem]) -> None:
    """One `skipped FILE: reason` line per refused pool file, on stderr, escaped."""
    for problem in problems:
        console.print(Text.assemble(("skipped", "yellow"), " ", one_line(str(problem))),
                      highlight=False)


def _print_state(out: Console, registry: Registry, state: store.PoolState, now: float) -> None:
    data = status_dict(registry, state, now)
    use = usage(state, now, pool_progress(registry, state, now))
    span = (f"{state.min_replicas}..{state.max_replicas}"
            if state.min_replicas != state.max_replicas else str(state.min_replicas))
    left = "until stopped" if state.until is None else f"{format_age(state.until - now)} left"
    out.print(Text.assemble(
        (one_line(state.id), "bold"), " ",
        one_line(f"{state.engine}:{state.model} {state.status}: desired {state.desired} "
                 f"(replicas {span}), ready {data['ready']}, {left}; controller "
                 f"{state.controller_host}:{state.controller_pid} seen "
                 f"{format_age(now - state.heartbeat_at)} ago, lead time "
                 f"{state.lead_time_s:.0f}s")))
    if state.error:
        out.print(Text("  " + one_line(f"gave up: {state.error}"), style="red"))
    table = Table("member", "job", "phase", "restarts", "walltime left", "up", "GPU-h", "note",
                  box=None)
    shown = [m for m in state.members if m.live or len(state.members) <= 12]
    for m in shown[-24:]:
        table.add_row(*(Text(one_line(str(v))) for v in (
            m.id, m.job_id, m.phase, m.restarts or "-",
            format_age(m.time_left(now)) if m.live else "-",
            format_age(((m.ended_at or now) - m.started_at) if m.started_at else None),
            f"{member_hours(m, now) * m.gpus:.3f}" if m.gpus else "-", m.reason)))
    out.print(table)
    for h in state.handovers[-5:]:
        out.print(Text("  " + one_line(f"hand-over {h.old} -> {h.new}: overlap {h.overlap_s:.1f}s")))
    out.print(Text("  " + one_line(
        f"used {use.gpu_hours:.3f} GPU-hours ({use.replica_hours:.3f} replica-hours), "
        f"{state.replaced_losses} losses replaced, {len(state.handovers)} hand-overs")))
    out.print(Text("  " + one_line(accounting_line(use))))
    work = remaining(registry, state.serves, now)
    if work is not None:
        eta = work.eta_s()
        out.print(Text("  " + one_line(
            f"{work.workflows} workflow(s) using it: {work.remaining} items left at "
            f"{work.rate:.2f} items/s" + (f", about {format_age(eta)}" if eta else ""))))


def accounting_line(use: Usage) -> str:
    """`items`, items per GPU-hour and the GPU-hours the rest needs, in one line."""
    if use.items_done is None:
        return "items: none reported (workflows report theirs while they run)"
    line = f"{use.items_done}" + (f"/{use.items_total}" if use.items_total else "") + " items"
    if use.items_per_gpu_hour is not None:
        line += f", {use.items_per_gpu_hour:.0f} items per GPU-hour"
    elif use.items_per_replica_hour is not None:
        line += f", {use.items_per_replica_hour:.0f} items per replica-hour (no GPUs)"
    if use.gpu_hours_rest is not None:
        line += f", about {use.gpu_hours_rest:.2f} GPU-hours for the rest"
    elif use.replica_hours_rest is not None:
        line += f", about {use.replica_hours_rest:.2f} replica-hours for the rest"
    return line


@pool.command()
@click.argument("pool_id")
@click.option("--done", type=click.IntRange(min=0), required=True, help="Items finished so far.")
@click.option("--total", type=click.IntRange(min=0), default=None, help="Items in the input.")
@registry_option
@shared_option
def progress(registry_path: str | None, shared: bool, pool_id: str, done: int,
             total: int | None) -> None:
    """Record a workflow's progress for the pool's items per GPU-hour and rest estimate."""
    registry = open_registry(registry_path, shared)
    store.read_state(registry, pool_id)
    store.write_progress(registry, pool_id, done, total)


@pool.command()
@click.argument("pool_id")
@click.option("--wait/--no-wait", default=True, help="Wait until every member has left.")
@click.option("--timeout", type=click.FloatRange(min=0), default=300.0,
              help="Seconds to wait with --wait.")
@registry_option
@shared_option
def stop(registry_path: str | None, shared: bool, pool_id: str, wait: bool,
         timeout: float) -> None:
    """Ask a pool's controller (any process, any node) to drain every member and exit."""
    registry = open_registry(registry_path, shared)
    store.request_stop(registry, pool_id)
    console.print(f"pool {pool_id}: stop requested", highlight=False)
    if not wait:
        return
    deadline = time.monotonic() + timeout
    while True:
        state = store.read_state(registry, pool_id)
        if state.status == "stopped":
            console.print(f"pool {pool_id}: stopped", highlight=False)
            return
        if time.time() - state.heartbeat_at > 60:
            raise UsageError(f"pool {pool_id}: its controller ({state.controller_host}:"
                             f"{state.controller_pid}) has not run for "
                             f"{time.time() - state.heartbeat_at:.0f} s; stop its members with "
                             "'nerschat stop'")
        if time.monotonic() > deadline:
            raise UsageError(f"pool {pool_id}: still {state.status} after {timeout:.0f} s; "
                             "see 'nerschat pool status'")
        time.sleep(0.5)
