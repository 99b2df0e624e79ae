"""How many requests to keep in flight: measured from the endpoints, not guessed.

`AdaptiveLimit` follows the latency of finished work (a gradient limit, as in TCP Vegas or
Netflix's concurrency-limits): while latency stays near the lowest seen, the servers have
idle slots and the limit doubles; once work queues at the servers, latency grows and the
limit settles where the latency is about `tolerance` times the service time, that is
about `tolerance` times what the servers run at once (like a plain client keeping twice the
capacity in flight). `drive()` runs a
stream of work under such a limit, so a run never drains between shards.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


class AdaptiveLimit:
    """A concurrency limit in [minimum, maximum] adapted to observed latency (seconds)."""

    def __init__(self, initial: int = 16, minimum: int = 4, maximum: int = 4096,
                 tolerance: float = 2.0):
        self.limit = float(max(minimum, min(initial, maximum)))
        self.minimum, self.maximum, self.tolerance = minimum, maximum, tolerance
        self.min_latency: float | None = None
        self._sum = 0.0
        self._count = 0

    def observe(self, latency: float) -> None:
        """Record one finished unit of work; adjusts `limit` once per window of work."""
        self._sum += latency
        self._count += 1
        if self._count < max(8, int(self.limit) // 2):
            return
        average = self._sum / self._count
        self._sum, self._count = 0.0, 0
        if self.min_latency is None or average < self.min_latency:
            self.min_latency = average  # the service time without queueing
        ratio = self.min_latency / max(average, 1e-9)
        if ratio > 0.8:  # no queue yet: grow quickly
            new = self.limit * 2
        else:
            new = self.limit * min(1.0, self.tolerance * ratio) + math.sqrt(self.limit)
        self.limit = max(float(self.minimum), min(float(self.maximum), new))

    @property
    def current(self) -> int:
        """The current concurrency limit, as a whole number of requests."""
        return int(self.limit)


async def drive(work: Iterable[T], handle: Callable[[T], Awaitable[None]],
                limit: AdaptiveLimit | int, *, size: Callable[[T], int] | None = None,
                max_size: int = 0) -> None:
    """Run `handle` over `work` with at most `limit` at once; `work` is read lazily.

    With `size`, units are also held back while the sizes in flight (e.g. bytes of input)
    would pass `max_size`, so memory stays bounded whatever the limit grows to.
    """
    fixed = limit if isinstance(limit, int) else None
    adaptive = limit if isinstance(limit, AdaptiveLimit) else None
    finished: asyncio.Queue[BaseException | None] = asyncio.Queue()
    iterator = iter(work)
    active = 0
    in_flight_size = 0
    exhausted = False
    held: list[T] = []

    async def one(unit: T, weight: int) -> None:
        nonlocal in_flight_size
        started = time.monotonic()
        try:
            await handle(unit)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver, which re-raises
            finished.put_nowait(exc)
            return
        finally:
            in_flight_size -= weight
        if adaptive is not None:
            adaptive.observe(time.monotonic() - started)
        finished.put_nowait(None)

    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            width = fixed if fixed is not None else adaptive.current  # type: ignore[union-attr]
            while active < width:
                if held:
                    unit = held.pop()
                elif exhausted:
                    break
                else:
                    try:
                        unit = next(iterator)
                    except StopIteration:
                        exhausted = True
                        break
                weight = size(unit) if size is not None else 0
                if active and max_size and in_flight_size + weight > max_size:
                    held.append(unit)  # wait until enough work in flight has finished
                    break
                in_flight_size += weight
                task = asyncio.create_task(one(unit, weight))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                active += 1
            if active == 0:
                return
            error = await finished.get()
            active -= 1
            if error is not None:
                raise error
    finally:
        for task in list(tasks):
            task.cancel()
