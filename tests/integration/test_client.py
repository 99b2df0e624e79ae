"""connect()/aconnect() over real stub pilots: balancing, fail-over, streaming, discovery cost."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import openai
import pytest

import nerschat
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters
from tests.conftest import make_endpoint

MESSAGES = [{"role": "user", "content": "hello"}]


def received(endpoint: nerschat.Endpoint) -> int:
    return int(server_counters(endpoint)["nerschat_stub_requests_received_total"])


def served(endpoint: nerschat.Endpoint) -> int:
    return int(server_counters(endpoint)["nerschat_stub_requests_served_total"])


@pytest.mark.slow
async def test_2000_requests_survive_a_kill_and_use_a_new_replica(
        fleet: StubFleet, registry: Registry) -> None:
    pilots = [fleet.start("m1", latency=0.01) for _ in range(3)]
    endpoints = [fleet.wait_ready(p) for p in pilots]
    client = nerschat.aconnect("m1", registry=registry, wait_timeout=30, refresh_interval=0.5)
    total, done = 2000, 0
    late: list[nerschat.Endpoint] = []

    async def call(i: int, gate: asyncio.Semaphore) -> str:
        nonlocal done
        async with gate:
            reply = await client.chat.completions.create(
                model="m1", messages=[{"role": "user", "content": f"item {i}"}])
            done += 1
            return reply.choices[0].message.content or ""

    async def chaos() -> None:
        while done < 400:
            await asyncio.sleep(0.01)
        os.kill(pilots[0].server_pid, signal.SIGKILL)  # type: ignore[arg-type]
        late.append(await asyncio.to_thread(fleet.start_ready, 1, "m1", latency=0.01))

    gate = asyncio.Semaphore(64)
    results, _ = await asyncio.gather(
        asyncio.gather(*(call(i, gate) for i in range(total))), chaos())
    assert len(results) == total and all(f"item {i}" in r for i, r in enumerate(results))
    (new,) = late[0]
    assert served(new) > 0, "the replica started mid-run got no traffic"
    survivors = [served(e) for e in endpoints[1:]]
    assert max(survivors) <= 1.2 * min(survivors), survivors
    await client.close()


@pytest.mark.slow
async def test_load_is_spread_evenly(fleet: StubFleet, registry: Registry) -> None:
    endpoints = fleet.start_ready(3, "m1", latency=0.005)
    client = nerschat.aconnect("m1", registry=registry, wait_timeout=30)
    gate = asyncio.Semaphore(32)

    async def call() -> None:
        async with gate:
            await client.chat.completions.create(model="m1", messages=MESSAGES)

    await asyncio.gather(*(call() for _ in range(600)))
    counts = [served(e) for e in endpoints]
    assert sum(counts) == 600
    assert max(counts) <= 1.2 * min(counts), counts
    await client.close()


def test_streaming_through_the_transport(fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(1, "m1")
    client = nerschat.connect("m1", registry=registry, wait_timeout=30)
    stream = client.chat.completions.create(
        model="m1", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text.startswith("stub-m1 answer 0:") and text.endswith("hello")


def test_error_after_stream_started_surfaces_and_is_not_retried(
        fleet: StubFleet, registry: Registry) -> None:
    # A 30 s answer: still streaming however long the second pilot takes to start on a busy
    # machine (the kill ends it at once, so the test does not wait for it).
    dying = fleet.start("m1", chunk_delay=2.0)
    fleet.wait_ready(dying)
    client = nerschat.connect("m1", registry=registry, wait_timeout=30)
    stream = client.chat.completions.create(model="m1", messages=MESSAGES, stream=True)
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    (other,) = fleet.start_ready(1, "m1")
    os.kill(dying.server_pid, signal.SIGKILL)  # type: ignore[arg-type]
    with pytest.raises((openai.APIError, Exception)) as info:
        for _ in stream:
            pass
    assert not isinstance(info.value, AssertionError)
    assert received(other) == 0, "a request whose stream had started was sent again"


def test_all_replicas_down_waits_for_one(fleet: StubFleet, registry: Registry) -> None:
    (first,) = fleet.start_ready(1, "m1")
    client = nerschat.connect("m1", registry=registry, wait_timeout=60, refresh_interval=0.2)
    client.chat.completions.create(model="m1", messages=MESSAGES)
    fleet.pilots[0].process.send_signal(signal.SIGTERM)
    fleet.pilots[0].process.wait(20)
    outcome: list[object] = []
    caller = threading.Thread(target=lambda: outcome.append(
        client.chat.completions.create(model="m1", messages=MESSAGES)))
    caller.start()
    time.sleep(1.0)
    assert not outcome, "the request should be waiting for a replica"
    fleet.start_ready(1, "m1")
    caller.join(30)
    assert outcome and outcome[0].choices[0].message.content  # type: ignore[attr-defined]


def test_failover_does_not_multiply_sdk_retries(fleet: StubFleet, registry: Registry) -> None:
    broken = fleet.start_ready(2, "m1", error_every=1, error_status=503)
    client = nerschat.connect("m1", registry=registry, wait_timeout=3, max_retries=2,
                              failover_attempts=4)
    with pytest.raises(openai.InternalServerError, match="nerschat: "):
        client.chat.completions.create(model="m1", messages=MESSAGES)
    total = sum(received(e) for e in broken)
    assert total <= 4, f"{total} attempts reached the servers for one request"


def test_sdk_retries_still_cover_500(fleet: StubFleet, registry: Registry) -> None:
    (flaky,) = fleet.start_ready(1, "m1", error_every=2, error_status=500)
    client = nerschat.connect("m1", registry=registry, wait_timeout=10, max_retries=2)
    client.chat.completions.create(model="m1", messages=MESSAGES)  # request 1 ok
    client.chat.completions.create(model="m1", messages=MESSAGES)  # 2 fails -> SDK retries
    assert received(flaky) == 3


def test_one_client_routes_by_request_model(fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(1, "chat-model")
    fleet.start_ready(1, "embed-model", kind="embedding")
    client = nerschat.connect(registry=registry, wait_timeout=30)
    reply = client.chat.completions.create(model="chat-model", messages=MESSAGES)
    assert reply.choices[0].message.content.startswith("stub-chat-model")  # type: ignore[union-attr]
    vectors = client.embeddings.create(model="embed-model", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    with pytest.raises(openai.InternalServerError, match="nothing registered for model 'nope'"):
        nerschat.connect(registry=registry, wait_timeout=0.5).chat.completions.create(
            model="nope", messages=MESSAGES)


def test_big_registry_is_not_scanned_per_request(fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(3, "m1")
    now = time.time()
    for i in range(497):
        registry.publish(make_endpoint(
            id=f"other-{i}", model=f"other-{i % 20}",
            heartbeat_at=now - (1000 if i % 5 == 0 else 0), ttl=3600 if i % 5 else 10))
    client = nerschat.connect("m1", registry=registry.path, wait_timeout=30)  # its own Registry
    pool = nerschat.pool_of(client)
    before = pool.registry.scans
    started = time.monotonic()
    for _ in range(1000):
        client.chat.completions.create(model="m1", messages=MESSAGES)
    elapsed = time.monotonic() - started
    allowed = 2 + elapsed / pool.refresh_interval
    assert pool.registry.scans - before <= allowed, (pool.registry.scans - before, elapsed)
    assert len(pool.loads()) == 3


def test_connect_timeout_says_what_it_saw(registry: Registry) -> None:
    registry.publish(make_endpoint(id="dead", heartbeat_at=time.time() - 600, ttl=10))
    with pytest.raises(nerschat.EndpointTimeout, match="only stale entries"):
        nerschat.connect("m1", registry=registry, wait_timeout=0.3)
    with pytest.raises(nerschat.EndpointTimeout, match="nothing registered for model 'zz'"):
        nerschat.connect("zz", registry=registry, wait_timeout=0.3)
