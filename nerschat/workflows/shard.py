"""Running one shard: the body of the client app (in-process or on a Parsl worker).

A shard keeps `in_flight` items going at once over the async client, appends each result
to its own file as soon as it is done, and skips items already in that file (so a Parsl
retry of the same shard does not redo them).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from pathlib import Path
from typing import Any

from nerschat.client.connect import aconnect, pool_of, routed_http_client
from nerschat.registry import Registry
from nerschat.workflows.store import ResultWriter, read_result_lines
from nerschat.workflows.tasks import Clients, ItemTask, task_from_dict

# A quarter more than the servers run at once: when a sequence finishes, the next request is
# already queued at the server instead of still on its way from the client.
OVERSUBSCRIBE = 1.25


def in_flight_for(capacity: int, shards: int) -> int:
    """Items in flight per shard so that all shards together keep every endpoint's batch full."""
    return max(1, math.ceil(capacity * OVERSUBSCRIBE / max(1, shards)))


async def run_shard_async(task: ItemTask, input_path: Path, result_path: Path, *,
                          registry: str | None, model: str | None, shards: int = 1,
                          in_flight: int | None = None, timeout: float = 600.0) -> dict[str, Any]:
    with open(input_path, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    items = [task.parse(r) for r in records]
    if result_path.exists():
        done = {r.get(task.key) for r in read_result_lines(result_path) if r.get("error") is None}
        items = [i for i in items if task.item_id(i) not in done]
    started = time.monotonic()
    if not items:
        return {"items": 0, "errors": 0, "seconds": 0.0, "in_flight": 0}
    client = await asyncio.to_thread(aconnect, model, task.kind if model is None else None,
                                     Registry.of(registry), timeout)
    pool = pool_of(client)
    http = routed_http_client(pool, timeout=timeout)
    width = in_flight or in_flight_for(pool.capacity(), shards)
    clients = Clients(client, http)
    pending = iter(items)
    errors = 0

    async def worker(out: ResultWriter) -> None:
        nonlocal errors
        for item in pending:
            result = await task.process(clients, item)
            errors += result.get("error") is not None
            out.write(result)

    try:
        with ResultWriter(result_path) as out:
            await asyncio.gather(*(worker(out) for _ in range(min(width, len(items)))))
    finally:
        await http.aclose()
        await client.close()
    return {"items": len(items), "errors": errors, "in_flight": width,
            "seconds": round(time.monotonic() - started, 3)}


def run_shard(task_spec: dict[str, Any], input_path: str, result_path: str,
              registry: str | None, model: str | None, shards: int = 1,
              in_flight: int | None = None, timeout: float = 600.0) -> dict[str, Any]:
    """Synchronous entry point: what the Parsl client app runs on a worker."""
    return asyncio.run(run_shard_async(
        task_from_dict(task_spec), Path(input_path), Path(result_path), registry=registry,
        model=model, shards=shards, in_flight=in_flight, timeout=timeout))
