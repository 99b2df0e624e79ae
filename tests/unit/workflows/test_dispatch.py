"""Units go to one endpoint each, sized to that endpoint and under its own in-flight limit."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from nerschat.client.pacing import AdaptiveLimit
from nerschat.client.routing import EndpointPool
from nerschat.registry import Endpoint, Registry
from nerschat.workflows.corpus import Document
from nerschat.workflows.dispatch import Unit, dispatch
from nerschat.workflows.embed import BatchPacker, ServerLimits
from tests.conftest import make_endpoint


def pool_of(registry: Registry, *entries: Endpoint) -> EndpointPool:
    for entry in entries:
        registry.publish(entry)
    pool = EndpointPool(registry, "emb")
    pool.refresh(force=True)
    return pool


async def test_batches_follow_the_limits_of_the_endpoint_they_go_to(registry: Registry) -> None:
    pool = pool_of(registry,
                   make_endpoint(id="big", model="emb", kind="embedding", max_batch_size=32),
                   make_endpoint(id="small", model="emb", kind="embedding", max_batch_size=4,
                                 url="http://127.0.0.1:10/v1"))
    sizes: dict[str, list[int]] = {"big": [], "small": []}

    async def handle(unit: Unit[Document]) -> None:
        assert unit.load is not None
        sizes[unit.load.id].append(len(unit.work))
        await asyncio.sleep(0.001)

    docs = [Document(f"d{i}", "text") for i in range(2000)]
    await dispatch(docs, handle, pool,
                   packer=lambda e: BatchPacker(ServerLimits.of(e) if e else
                                                ServerLimits.smallest([])))
    assert sum(map(sum, sizes.values())) == 2000
    assert max(sizes["big"]) == 32 and max(sizes["small"]) == 4
    assert sizes["small"], "both endpoints get work"


async def test_each_endpoint_has_its_own_in_flight_limit(registry: Registry) -> None:
    pool = pool_of(registry, make_endpoint(id="a", model="emb", kind="embedding"),
                   make_endpoint(id="b", model="emb", kind="embedding",
                                 url="http://127.0.0.1:10/v1"))
    for load in pool.loads():
        n = 5 if load.id == "a" else 9  # limits that hold still during the test
        load.limit = AdaptiveLimit(initial=n, minimum=n, maximum=n)
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    async def handle(unit: Unit[int]) -> None:
        assert unit.load is not None
        active[unit.load.id] += 1
        peak[unit.load.id] = max(peak[unit.load.id], active[unit.load.id])
        await asyncio.sleep(0.002)
        active[unit.load.id] -= 1

    await dispatch(range(300), handle, pool)
    assert peak == {"a": 5, "b": 9}
    assert all(load.reserved == 0 for load in pool.loads())


async def test_a_fixed_limit_counts_all_units_and_errors_are_raised(registry: Registry) -> None:
    pool = pool_of(registry, make_endpoint(id="a", model="emb", kind="embedding"))
    active = peak = 0

    async def handle(unit: Unit[int]) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001)
        active -= 1

    await dispatch(range(100), handle, pool, in_flight=7)
    assert peak == 7

    async def failing(unit: Unit[int]) -> None:
        if unit.work[0] == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        await dispatch(range(10), failing, pool, in_flight=2)


async def test_work_for_a_model_nobody_serves_does_not_hold_up_the_rest(
        registry: Registry) -> None:
    registry.publish(make_endpoint(id="a", model="m1"))
    pool = EndpointPool(registry)
    seen: list[tuple[str | None, int]] = []

    async def handle(unit: Unit[tuple[str, int]]) -> None:
        model, number = unit.work[0]
        if unit.load is None:
            await asyncio.sleep(0.2)  # waits in the transport for an endpoint
        seen.append((unit.load.id if unit.load else None, number))

    work = [("gone", 0)] + [("m1", i) for i in range(1, 50)]
    await dispatch(work, handle, pool, model_of=lambda w: w[0])
    assert seen[-1] == (None, 0) and len(seen) == 50
