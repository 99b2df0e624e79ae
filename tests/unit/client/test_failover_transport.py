"""The fail-over transports over a mock inner transport: no servers, no sockets."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

import nerschat
from nerschat.client.connect import ROUTED_BASE_URL, default_wait_timeout
from nerschat.client.routing import EndpointPool, RoutingSettings, affinity_rank
from nerschat.client.transport import AsyncFailoverTransport, FailoverTransport
from nerschat.errors import UsageError
from nerschat.registry import Registry
from tests.conftest import make_endpoint

CHAT = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m1",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "hi"}}]}


def publish(registry: Registry, *ids: str, model: str = "m1") -> None:
    for number, endpoint_id in enumerate(ids):
        registry.publish(make_endpoint(id=endpoint_id, model=model, api_key=f"key-{endpoint_id}",
                                       url=f"http://{endpoint_id}.test:{8000 + number}/v1"))


def host_of(request: httpx2.Request) -> str:
    return request.url.host.split(".")[0]


def body(model: str = "m1", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "x"}],
                       **extra}).encode()


def sync_client(pool: EndpointPool, handler: Callable[[httpx2.Request], httpx2.Response],
                **settings: Any) -> httpx2.Client:
    transport = FailoverTransport(pool, inner=httpx2.MockTransport(handler),
                                  settings=RoutingSettings(**settings))
    return httpx2.Client(transport=transport, base_url=ROUTED_BASE_URL)


def post(client: httpx2.Client, content: bytes | None = None) -> httpx2.Response:
    return client.post("/v1/chat/completions", content=content or body(),
                       headers={"Accept": "application/json"})


def test_a_refused_endpoint_cools_down_with_growing_back_off(registry: Registry) -> None:
    publish(registry, "a", "b")
    seen: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(host_of(request))
        if host_of(request) == "a":
            raise httpx2.ConnectError("refused", request=request)
        assert request.headers["Authorization"] == "Bearer key-b"
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = sync_client(pool, handler)
    for _ in range(4):
        assert post(client).json()["choices"][0]["message"]["content"] == "hi"
    a = next(load for load in pool.loads() if load.id == "a")
    assert seen.count("a") == 1, "a cooling endpoint got requests"
    assert a.failovers == 1 and a.cooldown_until > time.monotonic()
    first = a.cooldown_until
    a.cooldown_until = 0.0  # its cool-down is over: it is tried again, fails again
    for _ in range(3):
        post(client)
    assert a.consecutive_failures == 2
    assert a.cooldown_until - time.monotonic() > first - time.monotonic(), "no back-off"
    assert all(load.outstanding == 0 for load in pool.loads())


def test_give_up_is_a_503_the_sdk_does_not_retry(registry: Registry) -> None:
    publish(registry, "a")
    calls = Counter[str]()

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls["a"] += 1
        return httpx2.Response(502)

    pool = EndpointPool(registry, "m1", min_refresh_gap=0.0)
    reply = post(sync_client(pool, handler, wait_timeout=1.0))
    assert reply.status_code == 503
    assert reply.headers["x-should-retry"] == "false"
    assert "fail-over gave up" in reply.json()["error"]["message"]
    assert calls["a"] >= 2, "gave up before the wait deadline"


def test_a_capped_attempt_count_still_holds(registry: Registry) -> None:
    publish(registry, "a", "b")
    calls: list[str] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls.append(host_of(request))
        return httpx2.Response(503)

    pool = EndpointPool(registry, "m1")
    reply = post(sync_client(pool, handler, wait_timeout=30.0, max_attempts=3))
    assert reply.status_code == 503 and len(calls) == 3


def test_routes_by_each_requests_model(registry: Registry) -> None:
    publish(registry, "a", model="chat")
    publish(registry, "e", model="embed")
    hits: list[tuple[str, str]] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        hits.append((host_of(request), json.loads(request.content)["model"]))
        return httpx2.Response(200, json=CHAT)

    client = sync_client(EndpointPool(registry), handler, wait_timeout=0.5)
    post(client, body("chat"))
    post(client, body("embed"))
    assert hits == [("a", "chat"), ("e", "embed")]
    reply = post(client, body("nope"))
    assert reply.status_code == 503 and "nothing registered for model 'nope'" in reply.text


def test_a_500_fails_over_but_a_500_everywhere_is_the_requests_own(registry: Registry) -> None:
    publish(registry, "a", "b")

    def sick_a(request: httpx2.Request) -> httpx2.Response:
        if host_of(request) == "a":
            return httpx2.Response(500, json={"error": {"message": "engine dead"}})
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = sync_client(pool, sick_a)
    assert all(post(client).status_code == 200 for _ in range(20))

    calls: list[str] = []

    def poison(request: httpx2.Request) -> httpx2.Response:
        calls.append(host_of(request))
        return httpx2.Response(500, json={"error": {"message": "bad request crashed it"}})

    reply = post(sync_client(EndpointPool(registry, "m1"), poison))
    assert reply.status_code == 500 and sorted(calls) == ["a", "b"]


@pytest.mark.parametrize("bad", [b"<html>proxy error</html>", b'{"choices": [', b'{"id": "x"}'])
def test_a_200_reply_that_is_not_the_apis_json_fails_over(registry: Registry, bad: bytes) -> None:
    publish(registry, "a", "b")

    def handler(request: httpx2.Request) -> httpx2.Response:
        if host_of(request) == "a":
            return httpx2.Response(200, content=bad)
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = sync_client(pool, handler)
    for _ in range(5):
        assert post(client).json()["choices"]
    assert next(load for load in pool.loads() if load.id == "a").failovers == 1


def test_a_fast_failing_replica_is_ejected_as_an_outlier(registry: Registry) -> None:
    publish(registry, "a", "b", "c")
    calls = Counter[str]()

    def handler(request: httpx2.Request) -> httpx2.Response:
        calls[host_of(request)] += 1
        if host_of(request) == "a" and calls["a"] % 3:  # two of three fail, instantly
            return httpx2.Response(500, json={"error": {"message": "x"}})
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = sync_client(pool, handler)
    for _ in range(150):
        assert post(client).status_code == 200
        for load in pool.loads():  # cool-downs alone would have ended by now
            if load.id == "a" and load.ejections == 0:
                load.cooldown_until = 0.0
    a = next(load for load in pool.loads() if load.id == "a")
    assert a.ejections >= 1
    assert calls["a"] < calls["b"] / 2, calls
    stats = {row["id"]: row for row in pool.stats()}
    assert stats["a"]["ejections"] == a.ejections and stats["b"]["in_flight"] == 0


def test_repr_of_a_load_shows_no_key(registry: Registry) -> None:
    publish(registry, "a")
    pool = EndpointPool(registry, "m1")
    pool.refresh()
    (load,) = pool.loads()
    assert "key-a" not in repr(load) and "key-a" not in repr(pool.loads())


def test_a_replacement_within_the_wait_budget_gets_the_request(registry: Registry) -> None:
    """Give-up is decided by the deadline: a dead entry and a replacement 2.5 s later."""
    publish(registry, "dead")

    def handler(request: httpx2.Request) -> httpx2.Response:
        if host_of(request) == "dead":
            raise httpx2.ConnectError("refused", request=request)
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1", refresh_interval=0.1, min_refresh_gap=0.05)
    client = sync_client(pool, handler, wait_timeout=30.0)
    later = threading.Timer(2.5, lambda: publish(registry, "dead", "fresh"))
    later.start()
    try:
        reply = post(client)
    finally:
        later.join()
    assert reply.status_code == 200
    assert next(load for load in pool.loads() if load.id == "dead").failovers >= 2


# -- asynchronous: deadlines and streams ------------------------------------------------


def async_client(pool: EndpointPool, handler: Callable[..., Any],
                 **settings: Any) -> httpx2.AsyncClient:
    transport = AsyncFailoverTransport(pool, inner=httpx2.MockTransport(handler),
                                       settings=RoutingSettings(**settings))
    return httpx2.AsyncClient(transport=transport, base_url=ROUTED_BASE_URL)


async def apost(client: httpx2.AsyncClient, content: bytes | None = None) -> httpx2.Response:
    return await client.post("/v1/chat/completions", content=content or body(),
                             headers={"Accept": "application/json"})


async def test_a_hung_replica_is_abandoned_and_ejected(registry: Registry) -> None:
    publish(registry, "hung", "good")
    calls = Counter[str]()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        calls[host_of(request)] += 1
        if host_of(request) == "hung" and calls["hung"] > 1:
            await asyncio.Event().wait()  # accepts, never answers
        await asyncio.sleep(0.01)
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = async_client(pool, handler, first_byte_timeout=0.5)
    replies = await asyncio.wait_for(
        asyncio.gather(*(apost(client) for _ in range(40))), timeout=60)
    assert all(r.status_code == 200 for r in replies)
    hung = next(load for load in pool.loads() if load.id == "hung")
    assert hung.failovers >= 1 and hung.outstanding == 0
    assert calls["good"] >= 39


async def test_a_slow_but_progressing_replica_is_not_abandoned(registry: Registry) -> None:
    """One long request on a replica that keeps answering others: not a stall."""
    publish(registry, "a")
    calls = Counter[str]()

    async def handler(request: httpx2.Request) -> httpx2.Response:
        calls["all"] += 1
        long = json.loads(request.content).get("max_tokens") == 999
        await asyncio.sleep(1.5 if long else 0.05)
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = async_client(pool, handler, first_byte_timeout=0.3)

    async def chatter() -> None:
        for _ in range(25):
            await apost(client)

    long_reply, _ = await asyncio.gather(apost(client, body(max_tokens=999)), chatter())
    assert long_reply.status_code == 200
    assert calls["all"] == 26, "the long request was sent twice"


async def test_a_stream_is_released_when_closed_and_never_retried(registry: Registry) -> None:
    publish(registry, "a", "b")
    calls = Counter[str]()

    async def chunks() -> Any:
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    async def handler(request: httpx2.Request) -> httpx2.Response:
        calls[host_of(request)] += 1
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=chunks())

    pool = EndpointPool(registry, "m1")
    client = async_client(pool, handler)
    async with client.stream("POST", "/v1/chat/completions", content=body(stream=True)) as reply:
        assert sum(load.outstanding for load in pool.loads()) == 1
        text = b"".join([c async for c in reply.aiter_bytes()])
    assert text == b"data: 1\n\ndata: [DONE]\n\n"
    assert sum(load.outstanding for load in pool.loads()) == 0
    assert sum(calls.values()) == 1


async def test_a_stream_that_goes_silent_ends_with_a_read_timeout(registry: Registry) -> None:
    publish(registry, "a", "b")
    calls = Counter[str]()

    async def silent() -> Any:
        yield b"data: 1\n\n"
        await asyncio.Event().wait()
        yield b"never"

    async def handler(request: httpx2.Request) -> httpx2.Response:
        calls[host_of(request)] += 1
        if json.loads(request.content).get("stream"):
            return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                                   content=silent())
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = async_client(pool, handler, idle_timeout=0.4)

    async def others() -> None:  # the peer keeps making progress
        for _ in range(30):
            await apost(client)
            await asyncio.sleep(0.03)

    async def streamed() -> list[bytes]:
        got: list[bytes] = []
        async with client.stream("POST", "/v1/chat/completions",
                                 content=body(stream=True)) as reply:
            async for chunk in reply.aiter_bytes():
                got.append(chunk)
        return got

    outcome = await asyncio.gather(streamed(), others(), return_exceptions=True)
    assert isinstance(outcome[0], httpx2.ReadTimeout), outcome[0]
    assert outcome[1] is None
    assert sum(load.outstanding for load in pool.loads()) == 0
    assert sum(load.failovers for load in pool.loads()) == 1


def test_pool_of_gives_the_clients_pool(registry: Registry) -> None:
    publish(registry, "a")
    client = nerschat.connect("m1", registry=registry, wait_timeout=1)
    assert nerschat.pool_of(client).model == "m1"
    with pytest.raises(UsageError, match="not made by nerschat"):
        nerschat.pool_of(openai.OpenAI(api_key="x", base_url="http://x/v1"))


def test_connect_keeps_the_sdk_timeout_apart_from_the_wait(registry: Registry) -> None:
    publish(registry, "a")
    client = nerschat.connect("m1", registry=registry, wait_timeout=1, timeout=7.5)
    assert client.timeout == 7.5
    transport = client._client._transport  # type: ignore[attr-defined]
    assert transport.settings.wait_timeout == 1


def test_sync_attempts_carry_the_first_byte_deadline_as_read_timeout(registry: Registry) -> None:
    publish(registry, "a", "b")
    reads: list[float] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        reads.append(request.extensions["timeout"]["read"])
        if host_of(request) == "a":
            raise httpx2.ReadTimeout("silent", request=request)
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    pool.refresh()
    for load in pool.loads():  # b has answered recently, a has not: a stalled
        load.last_progress = time.monotonic() + (3600 if load.id == "b" else -3600)
    client = sync_client(pool, handler, first_byte_timeout=2.5)
    client.timeout = httpx2.Timeout(600.0)
    assert post(client).status_code == 200
    # a (tried first) is abandoned; the retry on b runs without the deadline: only once.
    assert reads == [2.5, 600.0]
    assert next(load for load in pool.loads() if load.id == "a").failovers == 1


def test_requests_with_one_affinity_key_reach_one_replica(registry: Registry) -> None:
    publish(registry, "a", "b", "c")
    seen: dict[str, set[str]] = {}

    def handler(request: httpx2.Request) -> httpx2.Response:
        key = request.headers["X-Nerschat-Affinity"]
        seen.setdefault(key, set()).add(host_of(request))
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = sync_client(pool, handler)
    keys = [f"{n:016x}" for n in range(60)]
    for _ in range(2):  # e.g. the reasoning request, then the verdict, of each item
        for key in keys:
            client.post("/v1/chat/completions", content=body(),
                        headers={"X-Nerschat-Affinity": key})
    assert all(len(hosts) == 1 for hosts in seen.values()), "a key was split over replicas"
    per_replica = Counter(next(iter(hosts)) for hosts in seen.values())
    assert set(per_replica) == {"a", "b", "c"} and min(per_replica.values()) >= 10


def test_affinity_yields_to_a_cooling_replica(registry: Registry) -> None:
    publish(registry, "a", "b")
    key = next(f"{n:016x}" for n in range(100)
               if affinity_rank(f"{n:016x}", "a") > affinity_rank(f"{n:016x}", "b"))
    pool = EndpointPool(registry, "m1")
    pool.refresh()
    a = next(load for load in pool.loads() if load.id == "a")
    assert pool.try_acquire("m1", key) is a
    a.cooldown_until = time.monotonic() + 60
    chosen = pool.try_acquire("m1", key)
    assert chosen is not None and chosen.id == "b"


def test_the_wait_defaults_to_600_s_or_a_shorter_request_timeout() -> None:
    assert default_wait_timeout(None, openai.DEFAULT_TIMEOUT) == 600.0
    assert default_wait_timeout(None, 5) == 5.0
    assert default_wait_timeout(None, None) == 600.0
    assert default_wait_timeout(30.0, 5) == 30.0  # an explicit wait is never capped


@pytest.mark.parametrize("status", [401, 404])
def test_a_replica_that_is_not_the_server_it_names_is_ejected(registry: Registry,
                                                               status: int) -> None:
    publish(registry, "a", "b")

    def handler(request: httpx2.Request) -> httpx2.Response:
        if host_of(request) == "a":
            return httpx2.Response(status, json={"detail": "Not Found"})
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    client = sync_client(pool, handler)
    assert all(post(client).status_code == 200 for _ in range(10))
    bad = next(load for load in pool.loads() if load.id == "a")
    assert bad.ejections == 1 and bad.sent == 1

    calls: list[str] = []

    def everywhere(request: httpx2.Request) -> httpx2.Response:
        calls.append(host_of(request))
        return httpx2.Response(status, json={"error": {"message": "no such model"}})

    reply = post(sync_client(EndpointPool(registry, "m1"), everywhere))
    assert reply.status_code == status and sorted(calls) == ["a", "b"]


@pytest.mark.parametrize("choices", [[], "oops", [1]])
async def test_a_200_without_choices_fails_over_async(registry: Registry, choices: Any) -> None:
    publish(registry, "a", "b")

    async def handler(request: httpx2.Request) -> httpx2.Response:
        if host_of(request) == "a":
            return httpx2.Response(200, json={**CHAT, "choices": choices})
        return httpx2.Response(200, json=CHAT)

    pool = EndpointPool(registry, "m1")
    async with async_client(pool, handler) as client:
        for _ in range(6):
            assert (await apost(client)).json()["choices"] == CHAT["choices"]
    assert next(load for load in pool.loads() if load.id == "a").ejections == 1


async def test_an_embedding_reply_of_the_wrong_count_fails_over(registry: Registry) -> None:
    publish(registry, "a", "b")

    async def handler(request: httpx2.Request) -> httpx2.Response:
        texts = json.loads(request.content)["input"]
        rows = [{"index": i, "embedding": [0.5, 0.5]} for i in range(len(texts))]
        if host_of(request) == "a":
            rows = rows[:-1]
        return httpx2.Response(200, json={"data": rows})

    pool = EndpointPool(registry, "m1")
    async with async_client(pool, handler) as client:
        for _ in range(4):
            reply = await client.post("/v1/embeddings", json={"model": "m1", "input": ["x", "y"]})
            assert len(reply.json()["data"]) == 2
