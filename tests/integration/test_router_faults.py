"""The router under bad clients and bad servers: gone clients, idle sockets, killed replicas."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import time

import httpx2
import openai
import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters, wait_until
from nerschat.testing.router import RouterProcess, running_router


def metric(router: RouterProcess, prefix: str) -> float:
    """Sum of the router's metric lines starting with `prefix`."""
    text = httpx2.get(f"{router.root}/metrics", timeout=10,
                      headers={"Authorization": f"Bearer {router.key}"}).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(prefix))


def test_client_gone_mid_stream_frees_the_upstream(fleet: StubFleet, registry: Registry) -> None:
    (endpoint,) = fleet.start_ready(1, "slow", chunk_delay=1.0)  # ~15 s to stream an answer
    prompt = " ".join(f"w{i}" for i in range(20))
    with running_router(registry) as router:
        with httpx2.stream("POST", f"{router.url}/chat/completions", timeout=30,
                           headers={"Authorization": f"Bearer {router.key}"},
                           json={"model": "slow", "stream": True,
                                 "messages": [{"role": "user", "content": prompt}]}) as reply:
            assert reply.status_code == 200
            chunks = reply.iter_raw()
            assert next(chunks).startswith(b"data:")
            assert server_counters(endpoint)["vllm:num_requests_running"] == 1
            assert metric(router, "nerschat_router_in_flight{") == 1
        # The client hung up after one chunk; the server stops long before its 15 s.
        wait_until(lambda: server_counters(endpoint)["vllm:num_requests_running"] == 0, 5,
                   "the server to see its client go")
        wait_until(lambda: metric(router, "nerschat_router_in_flight{") == 0, 5,
                   "the router to release the request")


def test_1000_idle_connections_do_not_block_others(fleet: StubFleet, registry: Registry) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    fleet.start_ready(1, "m1")
    idle: list[socket.socket] = []
    with running_router(registry) as router:
        host, port = router.root.removeprefix("http://").split(":")
        try:
            for i in range(1000):
                sock = socket.create_connection((host, int(port)), timeout=10)
                if i % 2:  # half say nothing, half start a request and stall
                    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
                idle.append(sock)
            client = openai.OpenAI(base_url=router.url, api_key=router.key, max_retries=0,
                                   timeout=10)
            for i in range(20):
                reply = client.chat.completions.create(
                    model="m1", messages=[{"role": "user", "content": f"still here {i}"}])
                assert reply.choices[0].message.content == f"stub-m1 answer 0: still here {i}"
            assert httpx2.get(f"{router.root}/health", timeout=10).status_code == 200
        finally:
            for sock in idle:
                sock.close()


@pytest.mark.slow
async def test_replica_killed_mid_run_no_client_sees_a_failure(
        fleet: StubFleet, registry: Registry) -> None:
    pilots = [fleet.start("m1", latency=0.02) for _ in range(3)]
    for pilot in pilots:
        fleet.wait_ready(pilot)
    victim = pilots[0]
    assert victim.endpoint is not None
    with running_router(registry) as router:
        client = openai.AsyncOpenAI(base_url=router.url, api_key=router.key, max_retries=0,
                                    timeout=30)
        done = 0

        async def call(i: int, gate: asyncio.Semaphore) -> str:
            nonlocal done
            async with gate:
                reply = await client.chat.completions.create(
                    model="m1", messages=[{"role": "user", "content": f"item {i}"}])
                done += 1
                return reply.choices[0].message.content or ""

        async def chaos() -> None:
            while done < 200:
                await asyncio.sleep(0.005)
            os.kill(victim.server_pid, signal.SIGKILL)  # type: ignore[arg-type]
            os.kill(victim.process.pid, signal.SIGKILL)  # its entry stays "ready" for a while

        gate = asyncio.Semaphore(32)
        started = time.monotonic()
        results, _ = await asyncio.gather(
            asyncio.gather(*(call(i, gate) for i in range(1000))), chaos())
        assert all(f"item {i}" in r for i, r in enumerate(results))
        assert time.monotonic() - started < 60
        killed = f'endpoint="{victim.endpoint.id}"'
        assert metric(router, f"nerschat_router_failovers_total{{{killed}") >= 1
        await client.close()


def test_nerschat_stop_all_stops_the_router_too(fleet: StubFleet, registry: Registry) -> None:
    import subprocess
    import sys

    fleet.start_ready(1, "m1")
    with running_router(registry) as router:
        out = subprocess.run([sys.executable, "-m", "nerschat.cli.main", "stop", "--all",
                              "--timeout", "30", "--registry", str(registry.path)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert router.process.wait(15) == 0
        assert registry.scan().entries == []


def test_server_killed_mid_stream_is_an_error_not_a_clean_end(
        fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(1, "slow", chunk_delay=0.5)
    server_pid = fleet.pilots[0].server_pid
    assert server_pid is not None
    with running_router(registry) as router:
        with pytest.raises(httpx2.RemoteProtocolError), httpx2.stream(
                "POST", f"{router.url}/chat/completions", timeout=30,
                headers={"Authorization": f"Bearer {router.key}"},
                json={"model": "slow", "stream": True,
                      "messages": [{"role": "user", "content": "a b c d e f g h"}]}) as reply:
            for i, _ in enumerate(reply.iter_raw()):
                if i == 1:
                    os.kill(server_pid, signal.SIGKILL)
        assert "Traceback" not in router.log.read_text()
