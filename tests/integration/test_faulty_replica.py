"""One faulty replica beside a healthy one: hung, answering 500, or dying with a replacement
on its way. Every request must succeed (the field cases hung-replica-stalls-batch,
http500-replica-blackhole and failover-gives-up-instead-of-waiting)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading

import pytest

import nerschat
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters


def received(endpoint: nerschat.Endpoint) -> int:
    return int(server_counters(endpoint)["nerschat_stub_requests_received_total"])


async def run_batch(client: object, items: int, in_flight: int) -> list[str]:
    gate = asyncio.Semaphore(in_flight)

    async def call(i: int) -> str:
        async with gate:
            reply = await client.chat.completions.create(  # type: ignore[attr-defined]
                model="m1", messages=[{"role": "user", "content": f"item {i}"}])
            return str(reply.choices[0].message.content)

    return await asyncio.gather(*(call(i) for i in range(items)))


@pytest.mark.slow
async def test_a_hung_replica_does_not_hold_the_batch(fleet: StubFleet, registry: Registry) -> None:
    (good,) = fleet.start_ready(1, "m1", latency=0.05)
    (hung,) = fleet.start_ready(1, "m1", latency=0.05, hang_after=3)
    client = nerschat.aconnect("m1", registry=registry, wait_timeout=10, first_byte_timeout=2)
    answers = await asyncio.wait_for(run_batch(client, 60, 8), timeout=120)
    assert all(f"item {i}" in answer for i, answer in enumerate(answers))
    loads = {load.id: load for load in nerschat.pool_of(client).loads()}
    assert loads[hung.id].failovers >= 1, "the hung replica's requests were not failed over"
    assert loads[hung.id].outstanding == 0
    assert received(hung) < 20 and received(good) >= 57
    await client.close()


def test_a_replica_answering_500_is_routed_around(fleet: StubFleet, registry: Registry) -> None:
    (good,) = fleet.start_ready(1, "m1", latency=0.02)
    (sick,) = fleet.start_ready(1, "m1", latency=0.02, error_every=1, error_status=500)
    client = nerschat.connect("m1", registry=registry, wait_timeout=30, max_retries=0)
    for i in range(100):
        reply = client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": f"item {i}"}])
        assert f"item {i}" in str(reply.choices[0].message.content)
    assert received(good) >= 100
    assert received(sick) <= 15, "the failing replica kept getting traffic"
    stats = {row["id"]: row for row in nerschat.pool_of(client).stats()}
    assert stats[sick.id]["errors"] == received(sick) and stats[good.id]["errors"] == 0


@pytest.mark.slow
def test_requests_wait_for_a_replacement_instead_of_giving_up(
        fleet: StubFleet, registry: Registry) -> None:
    (first,) = fleet.start_ready(1, "m1", ttl=30)
    client = nerschat.connect("m1", registry=registry, wait_timeout=60, max_retries=0)
    client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "warm"}])
    server_pid = fleet.pilots[0].server_pid  # read first: the server dies with its pilot
    os.kill(fleet.pilots[0].process.pid, signal.SIGKILL)  # the pilot dies hard: entry stays
    if server_pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(server_pid, signal.SIGKILL)
    replacement = threading.Thread(
        target=fleet.start_ready, args=(1, "m1"), kwargs={"startup_delay": 4})
    replacement.start()
    try:
        for i in range(5):  # each would have failed after ~1.5 s with an attempt count
            reply = client.chat.completions.create(
                model="m1", messages=[{"role": "user", "content": f"item {i}"}])
            assert f"item {i}" in str(reply.choices[0].message.content)
    finally:
        replacement.join()
    (dead,) = [load for load in nerschat.pool_of(client).loads() if load.id == first.id] or [None]
    assert dead is None or dead.failovers >= 1
