"""Sharded, resumable runs of an item task: plan, run (in-process or as Parsl apps), merge.

    OUT.jsonl.parts/   input-RRR-SSSS.jsonl    what each shard of run RRR was given
                       results-RRR-SSSS.jsonl  what it finished, appended item by item
    OUT.jsonl          the merge: input order, each id exactly once (written last, atomically)
    OUT.errors.jsonl   invalid input lines, with --skip-invalid

A rerun reads every results file, gives the shards only the ids not yet done, and merges
old and new results together.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from nerschat.client.readiness import wait_for_endpoints
from nerschat.errors import UsageError
from nerschat.parsl.config import parsl_session
from nerschat.registry import Endpoint, Registry
from nerschat.workflows.inputs import read_records, write_invalid
from nerschat.workflows.progress import LineCounter, RunProgress
from nerschat.workflows.shard import run_shard, run_shard_async
from nerschat.workflows.store import ResultStore
from nerschat.workflows.tasks import ItemTask


@dataclass
class RunReport:
    total: int
    skipped_done: int
    invalid: int
    processed: int
    seconds: float
    merged: dict[str, int]
    output: Path
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def parts_dir(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def split(items: list[dict[str, Any]], shards: int) -> list[list[dict[str, Any]]]:
    """Contiguous, near-equal chunks (keeps neighbouring items together for cache reuse)."""
    shards = max(1, min(shards, len(items)))
    size, extra = divmod(len(items), shards)
    chunks, start = [], 0
    for i in range(shards):
        end = start + size + (1 if i < extra else 0)
        chunks.append(items[start:end])
        start = end
    return chunks


class AmbiguousModel(UsageError, ValueError):
    """Several models are served and the task needs exactly one."""


def only_model(ready: list[Endpoint]) -> str:
    models = sorted({e.model for e in ready})
    if len(models) != 1:
        raise AmbiguousModel(f"several models are ready ({', '.join(models)}): pass --model")
    return models[0]


class ShardRunner:
    """Runs planned shards in this process, or as Parsl apps on the client executor.

    With `config_path`, the config is loaded for the run and cleaned up after it; with
    `parsl_loaded=True`, the caller's already loaded config is used (inside a pipeline).
    """

    def __init__(self, config_path: str | None = None, executor: str = "clients",
                 parsl_loaded: bool = False):
        self.config_path = config_path
        self.executor = executor
        self.parsl_loaded = parsl_loaded

    @property
    def uses_parsl(self) -> bool:
        return self.parsl_loaded or self.config_path is not None

    def run(self, task: ItemTask, shards: list[tuple[Path, Path]], *, registry: str | None,
            model: str | None, in_flight: int | None, timeout: float) -> list[dict[str, Any]]:
        if not self.uses_parsl:
            return self._in_process(task, shards, registry=registry, model=model,
                                    in_flight=in_flight, timeout=timeout)
        return self._parsl(task, shards, registry=registry, model=model, in_flight=in_flight,
                           timeout=timeout)

    @staticmethod
    def _in_process(task: ItemTask, shards: list[tuple[Path, Path]], **kwargs: Any
                    ) -> list[dict[str, Any]]:
        async def all_shards() -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(
                run_shard_async(task, inp, out, shards=len(shards), **kwargs)
                for inp, out in shards)))
        return asyncio.run(all_shards())

    def _parsl(self, task: ItemTask, shards: list[tuple[Path, Path]], **kwargs: Any
               ) -> list[dict[str, Any]]:
        import parsl

        with parsl_session(self.config_path if not self.parsl_loaded else None):
            app = parsl.python_app(run_shard, executors=[self.executor])
            futures = [app(task.to_dict(), str(inp), str(out), shards=len(shards), **kwargs)
                       for inp, out in shards]
            return [f.result() for f in futures]


def run_items(task: ItemTask, input_path: str | Path, output_path: str | Path, *,
              registry: str | None = None, model: str | None = None, shards: int | None = None,
              in_flight: int | None = None, skip_invalid: bool = False,
              runner: ShardRunner | None = None, timeout: float = 600.0,
              console: Console | None = None, show_progress: bool = True) -> RunReport:
    """Validate the input, run what is not done yet over the endpoints, merge the output."""
    input_path, output_path = Path(input_path), Path(output_path)
    console = console or Console(stderr=True)
    runner = runner or ShardRunner()
    parsed = read_records(input_path, task.parse, task.item_id, skip_invalid=skip_invalid)
    if parsed.invalid:
        errors_path = output_path.with_name(output_path.stem + ".errors.jsonl")
        write_invalid(errors_path, parsed.invalid)
        console.print(f"[yellow]{len(parsed.invalid)} invalid line(s) skipped[/]; "
                      f"see {errors_path}", highlight=False)
    order = [task.item_id(i) for i in parsed.items]
    store = ResultStore(parts_dir(output_path), key=task.key)
    done = store.done_ids()
    todo = [record for item_id, record in zip(order, parsed.records) if item_id not in done]
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    if todo:
        reg = Registry.of(registry)
        kind = task.kind if model is None else None
        if show_progress and console.is_terminal:
            with console.status("waiting for a ready endpoint") as status:
                ready = wait_for_endpoints(reg, model, kind, timeout,
                                           on_status=lambda s: status.update(f"waiting: {s}"))
        else:
            ready = wait_for_endpoints(reg, model, kind, timeout)
        if model is None and task.needs_model():
            model = only_model(ready)
            task.bind_model(model)
        store.ensure()
        run = store.next_run()
        planned = []
        for number, chunk in enumerate(split(todo, shards or 1)):
            inp, out = store.shard_paths(run, number)
            with open(inp, "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in chunk)
            planned.append((inp, out))
        counter = LineCounter(lambda: [out for _, out in planned])
        label = f"{task.name} {input_path.name}"
        with RunProgress(console, label, len(todo), counter, reg, model, kind,
                         enabled=show_progress):
            results = runner.run(task, planned, registry=str(reg.path), model=model,
                                 in_flight=in_flight, timeout=timeout)
    merged = store.merge(order, output_path)
    return RunReport(total=len(order), skipped_done=len(order) - len(todo),
                     invalid=len(parsed.invalid), processed=len(todo),
                     seconds=time.monotonic() - started, merged=merged, output=output_path,
                     results=results)
