"""The one live progress display of a sharded run (judge, run-batch, embed).

It reads the shard result files rather than callbacks, so the same display works for
in-process shards and for Parsl apps on other nodes. Per-endpoint load comes from each
server's Prometheus metrics (its entry's `metrics_url`), read with the gauges its entry names
in `load_metrics` (`nerschat.engine_metrics`); nothing is guessed from the engine's name.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from nerschat.engine_metrics import Backlog, MetricNames, read_backlog
from nerschat.pool.progress import WorkflowReporter
from nerschat.registry import Endpoint, Registry

LOAD_TIMEOUT = 1.0
"""Seconds each endpoint's metrics get to answer for the load table."""


class LineCounter:
    """Counts complete result lines (and error lines) appended to a set of files, incrementally.

    Bytes are counted, not parsed: the `"ok":false` of an error line's prefix appears nowhere
    else (result bodies are written with a space after colons).
    """

    def __init__(self, files: Callable[[], list[Path]]):
        self.files = files
        self._offsets: dict[Path, int] = {}
        self.lines = 0
        self.errors = 0
        self.tokens = 0

    def poll(self) -> int:
        """Read what was appended since the last poll; returns the total items counted so far."""
        for path in self.files():
            offset = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    chunk = handle.read()
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[path] = offset + len(complete)
            self.lines += complete.count(b"\n")
            self.errors += complete.count(b'"ok":false')
        return self.lines


def describe_load(backlog: Backlog) -> str:
    """`"R running, W waiting"` (or `"W waiting"` for an engine without a running gauge)."""
    waiting = f"{backlog.waiting:.0f} waiting"
    return waiting if backlog.running is None else f"{backlog.running:.0f} running, {waiting}"


def load_row(endpoint: Endpoint, timeout: float = LOAD_TIMEOUT) -> str:
    """The load column of one endpoint: its backlog, "no load metrics" or "unreachable"."""
    if MetricNames.of(endpoint) is None or not endpoint.metrics_url:
        return "no load metrics"
    backlog = read_backlog(endpoint, timeout)
    return "unreachable" if backlog is None else describe_load(backlog)


def endpoint_load(registry: Registry, model: str | None, kind: str | None) -> list[tuple[str, str]]:
    """`(endpoint id, load)` rows for the endpoints of `model` and `kind` (see `load_row`).

    Read from each endpoint's metrics (`LOAD_TIMEOUT` seconds each).
    """
    return [(endpoint.id, load_row(endpoint)) for endpoint in registry.endpoints(model, kind)]


class RunProgress:
    """A rich progress bar (+ endpoint load table) refreshed from a background thread."""

    def __init__(self, console: Console, description: str, total: int,
                 files: list[Path] | LineCounter, registry: Registry, model: str | None,
                 kind: str | None, enabled: bool = True, unit: str = "items"):
        self.console = console
        self.counter = files if isinstance(files, LineCounter) else LineCounter(lambda: files)
        self.registry, self.model, self.kind = registry, model, kind
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>7.1f} " + unit + "/s"),
            TextColumn("{task.fields[tokens]}"), TextColumn("errors {task.fields[errors]}"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console,
        )
        self.task = self.progress.add_task(escape(description), total=total, rate=0.0, errors=0,
                                           tokens="")
        self.load_rows: list[tuple[str, str]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()
        # Remaining items for pools serving the model (nerschat.pool.progress).
        self.reporter = WorkflowReporter(registry, model, total) if model else None

    def _render(self) -> Group:
        table = Table(box=None, show_header=False, padding=(0, 2))
        for endpoint_id, load in self.load_rows:
            table.add_row(f"  {escape(endpoint_id)}", load)
        return Group(self.progress, table)

    def _loop(self, live: Live | None) -> None:
        last_load = 0.0
        while not self._stop.wait(0.5):
            self.refresh()
            if live is not None and time.monotonic() - last_load > 2.0:
                last_load = time.monotonic()
                self.load_rows = endpoint_load(self.registry, self.model, self.kind)
                live.update(self._render())

    def refresh(self) -> None:
        """Update the bar from the result files: items done, items/s, errors, tokens/s."""
        done = self.counter.poll()
        elapsed = max(1e-9, time.monotonic() - self._started)
        tokens = f"{self.counter.tokens / elapsed:.0f} tokens/s" if self.counter.tokens else ""
        self.progress.update(self.task, completed=done, rate=done / elapsed,
                             errors=self.counter.errors, tokens=tokens)
        if self.reporter is not None:
            self.reporter.update(done)

    def __enter__(self) -> RunProgress:
        self._started = time.monotonic()
        live = None
        if self.enabled:
            live = Live(self._render(), console=self.console, refresh_per_second=4,
                        transient=False)
            live.__enter__()
        self._live = live
        if self.enabled or self.reporter is not None:
            self._thread = threading.Thread(target=self._loop, args=(live,), daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._live is not None:
            self.refresh()
            self._live.update(self._render())
            self._live.__exit__(None, None, None)
        if self.reporter is not None:
            self.reporter.close()
