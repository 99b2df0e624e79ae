"""Sending a stream of work over a pool's endpoints, each endpoint at its own pace and limits.

Each unit of work reserves a slot on one endpoint (`EndpointPool.reserve`, under that
endpoint's adaptive in-flight limit, so a fast replica gets more than a slow one), is sized
by a packer to that endpoint's advertised limits (a batch of texts within its batch size,
tokens and body limit; one item for tasks without a packer). Batches are pinned to the
endpoint they were sized for (fail-over still applies); single items are left to the
transport's own choice (least outstanding, prefix affinity), which measured faster for
judge and run-batch. The stream is read lazily, so the work never drains
between shards, and memory is bounded by the limits plus `max_size` bytes in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from nerschat.client.routing import EndpointLoad, EndpointPool, pinned
from nerschat.registry import Endpoint

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Packer(Protocol[T_contra]):
    """Fills one unit for one endpoint: `add` says whether a piece of work still fits."""

    def add(self, work: T_contra) -> bool:
        """Take `work` into the unit (True), or refuse it because the unit is full (False).

        The first piece of a unit is always taken.
        """
        ...


@dataclass
class Unit(Generic[T]):
    """Work sent together; `load` is the endpoint it is pinned to (None: the transport picks)."""

    work: list[T]
    load: EndpointLoad | None

    @property
    def endpoint(self) -> Endpoint | None:
        """The registry entry of the endpoint the unit goes to (None if not pinned)."""
        return self.load.endpoint if self.load is not None else None


_NOTHING: Any = object()
MAX_UNPINNED = 64
"""Units in flight without an endpoint (none usable for their model); they wait in the
transport for one, and so do not hold up the work of other models."""


def _usable(pool: EndpointPool, model: str | None) -> bool:
    now = time.monotonic()
    return any(load.cooldown_until <= now and (model is None or pool.model is not None
                                                or load.endpoint.model == model)
               for load in pool.loads())


async def dispatch(work: Iterable[T], handle: Callable[[Unit[T]], Awaitable[None]],
                   pool: EndpointPool, *, model_of: Callable[[T], str | None] | None = None,
                   packer: Callable[[Endpoint | None], Packer[T]] | None = None,
                   in_flight: int | None = None, size: Callable[[T], int] | None = None,
                   max_size: int = 0) -> None:
    """Run `handle` over units of `work` until it is exhausted; re-raises a failed `handle`.

    `model_of(work)` names the model its requests go to (None: the pool's). Units go out while
    an endpoint has room under its adaptive limit, or, with `in_flight`, while fewer than that
    many units are in flight in all. With `size` (bytes of a piece of work), units are also
    held back while `max_size` bytes are in flight. When no endpoint is usable and nothing is
    in flight, one unit goes out unpinned (the transport waits for an endpoint or gives up).
    """
    finished: asyncio.Queue[BaseException | None] = asyncio.Queue()
    iterator = iter(work)
    pending: Any = _NOTHING
    exhausted = False
    active = 0
    unpinned = 0
    bytes_in_flight = 0
    tasks: set[asyncio.Task[None]] = set()

    def take() -> Any:
        nonlocal pending, exhausted
        if pending is not _NOTHING:
            piece, pending = pending, _NOTHING
            return piece
        if exhausted:
            return _NOTHING
        try:
            return next(iterator)
        except StopIteration:
            exhausted = True
            return _NOTHING

    async def one(unit: Unit[T], weight: int, started: float) -> None:
        nonlocal bytes_in_flight, unpinned
        error: BaseException | None = None
        try:
            with pinned(unit.load.id if unit.load is not None and packer is not None else None):
                await handle(unit)
        except BaseException as exc:  # noqa: BLE001 - handed to the driver, which re-raises
            error = exc
        finally:
            bytes_in_flight -= weight
            if unit.load is not None:
                pool.unreserve(unit.load, None if error else time.monotonic() - started)
            else:
                unpinned -= 1
        finished.put_nowait(error)

    try:
        while True:
            while in_flight is None or active < in_flight:
                first = take()
                if first is _NOTHING:
                    break
                weight = size(first) if size is not None else 0
                if active and max_size and bytes_in_flight + weight > max_size:
                    pending = first
                    break
                model = model_of(first) if model_of is not None else None
                load = pool.reserve(model, limited=in_flight is None)
                if load is None and active and (unpinned >= MAX_UNPINNED
                                                or _usable(pool, model)):
                    pending = first  # every endpoint is full: wait for a unit to finish
                    break
                unpinned += load is None
                pieces = [first]
                if packer is not None:
                    pack = packer(load.endpoint if load is not None else None)
                    pack.add(first)
                    while True:
                        piece = take()
                        if piece is _NOTHING:
                            break
                        if (model_of is not None and model_of(piece) != model) \
                                or not pack.add(piece):
                            pending = piece
                            break
                        pieces.append(piece)
                        weight += size(piece) if size is not None else 0
                bytes_in_flight += weight
                task = asyncio.create_task(one(Unit(pieces, load), weight, time.monotonic()))
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
