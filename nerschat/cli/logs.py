"""`nerschat logs ID [-f]`: a pilot's server log, from the registry's `logs/` directory.

The log is found from the registry directory and the endpoint id alone (never from a path an
entry names), opened only if it is a regular file the registry trusts, and printed with
control characters escaped (`nerschat.server_log`). A pilot whose job is still queued has no
log yet: that is said plainly, with the job id and SLURM's reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import BinaryIO

import click
from rich.text import Text

from nerschat.cli.common import (
    FiniteFloat,
    console,
    fail,
    one_line,
    open_registry,
    registry_option,
)
from nerschat.pilot.describe import describe_phase
from nerschat.registry import Endpoint, Registry, RegistryError, check_id
from nerschat.server_log import LogError, follow, log_path, open_log, tail_lines
from nerschat.slurm import queued_jobs


def _pending_note(entry: Endpoint) -> str:
    """`ID has not started: job 4242 pending: waiting for ... (Resources), expected start ...`."""
    queue = queued_jobs([entry.slurm_job_id]) if entry.slurm_job_id else {}
    return (f"{entry.id} has not started, so it has no server log yet: "
            f"{describe_phase(entry, queue=queue)}")


def _while_running(registry: Registry, endpoint_id: str, poll: float) -> Iterator[bool]:
    """True while the pilot's entry is there and alive, after a `poll`-second pause."""
    while True:
        time.sleep(poll)
        entry = registry.get(endpoint_id)
        yield entry is not None and not entry.is_stale()


@click.command()
@click.argument("endpoint_id")
@click.option("-f", "--follow", "follow_log", is_flag=True,
              help="Keep printing new lines until the pilot ends (or Ctrl-C).")
@click.option("-n", "--lines", type=click.IntRange(min=0), default=50, show_default=True,
              help="Lines of the log's end to print first.")
@click.option("--poll", type=FiniteFloat(0.05, 3600.0), default=0.5, show_default=True,
              help="Seconds between looks at the log and the entry while following.")
@registry_option
def logs(registry_path: str | None, endpoint_id: str, follow_log: bool, lines: int,
         poll: float) -> None:
    """Print the server log of pilot ENDPOINT_ID (see `nerschat ls`); -f follows it.

    Works after the pilot has ended too (its log stays in the registry's logs/ directory).
    """
    registry = open_registry(registry_path)
    try:
        check_id(endpoint_id)
        entry = registry.get(endpoint_id)
        if entry is not None and entry.state == "pending":
            console.print(Text(one_line(_pending_note(entry))), highlight=False)
            if not follow_log:
                return
            entry = _await_start(registry, endpoint_id, poll)
            if entry is None:
                fail(f"{endpoint_id} is gone: its job ended without starting the pilot "
                     f"(see the job's output in {registry.path / 'jobs'})")
        _print_log(registry, endpoint_id, entry, follow_log, lines, poll)
    except (RegistryError, LogError) as exc:
        fail(str(exc), code=exc.exit_code)


def _await_start(registry: Registry, endpoint_id: str, poll: float) -> Endpoint | None:
    """Wait while the entry is pending; the started entry, or None if it went away."""
    while True:
        entry = registry.get(endpoint_id)
        if entry is None or entry.state != "pending":
            return entry
        time.sleep(max(poll, 1.0))


def _print_log(registry: Registry, endpoint_id: str, entry: Endpoint | None, follow_log: bool,
               lines: int, poll: float) -> None:
    path = log_path(registry, endpoint_id)
    handle = _try_open(registry, endpoint_id)
    if handle is None:
        if entry is None:
            fail(f"no endpoint {endpoint_id} and no log {path} (see 'nerschat ls')")
        if not follow_log:
            fail(f"{endpoint_id} ({entry.state}) has no server log yet at {path}")
        running = _while_running(registry, endpoint_id, poll)
        while handle is None:
            if not next(running):
                fail(f"{endpoint_id} ended before writing a server log at {path}")
            handle = _try_open(registry, endpoint_id)
    with handle:
        for line in tail_lines(handle, lines):
            click.echo(line)
        if not follow_log:
            return
        if entry is None:
            console.print(Text(one_line(f"{endpoint_id} is no longer registered: nothing to "
                                        "follow")), highlight=False)
            return
        for line in follow(handle, _while_running(registry, endpoint_id, poll)):
            click.echo(line)
    console.print(Text(one_line(f"{endpoint_id} ended")), highlight=False)


def _try_open(registry: Registry, endpoint_id: str) -> BinaryIO | None:
    try:
        return open_log(registry, endpoint_id)
    except FileNotFoundError:
        return None
