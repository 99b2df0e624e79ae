"""After ready, the pilot keeps checking its server: a frozen server leaves `ready` (and comes
back when it answers again, or is killed when it does not); a stop request delivered while the
pilot's own heartbeat was late is still obeyed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai
import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, pid_alive, wait_until

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]
FAST_PROBES = ("--health-timeout", "0.5", "--health-failures", "2")


def state(registry: Registry, endpoint_id: str) -> str | None:
    entry = registry.get(endpoint_id)
    return None if entry is None else entry.state




def test_frozen_server_leaves_ready_and_comes_back(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("m1", ttl=1.5, extra=FAST_PROBES)  # heartbeat every 0.5 s
    entry = fleet.wait_ready(pilot)
    server = pilot.server_pid
    assert server is not None
    os.kill(server, signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        wait_until(lambda: state(registry, entry.id) == "unhealthy", 15,
                   "the entry of the frozen server to leave ready")
        assert registry.endpoints("m1") == []  # clients route to nothing there
        current = registry.get(entry.id)
        assert current is not None and not current.is_stale()  # the pilot itself is alive
    finally:
        os.kill(server, signal.SIGCONT)
    wait_until(lambda: state(registry, entry.id) == "ready", 15, "the server to be ready again")
    assert [e.id for e in registry.endpoints("m1")] == [entry.id]


def test_server_unhealthy_too_long_is_killed_and_the_pilot_fails(fleet: StubFleet,
                                                                 registry: Registry) -> None:
    pilot = fleet.start("m1", ttl=1.5, extra=(*FAST_PROBES, "--unhealthy-timeout", "2"))
    entry = fleet.wait_ready(pilot)
    server = pilot.server_pid
    assert server is not None
    os.kill(server, signal.SIGSTOP)
    assert pilot.process.wait(30) == 1
    assert registry.get(entry.id) is None
    assert "stopped answering /health" in pilot.log.read_text()
    wait_until(lambda: not pid_alive(server), 15, "the frozen server to be killed")


def test_stop_while_the_heartbeat_is_late_is_not_lost(fleet: StubFleet,
                                                      registry: Registry) -> None:
    """`nerschat stop` sees a stale entry (the pilot was frozen), so it removes the entry and
    the stop request with it; the pilot, once running again, must still stop."""
    pilot = fleet.start("m1", ttl=1.5)
    entry = fleet.wait_ready(pilot)
    os.kill(pilot.process.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: (e := registry.get(entry.id)) is not None and e.is_stale(), 15,
                   "the heartbeat to be late")
        result = subprocess.run([*NERSCHAT, "stop", entry.id, "--registry", str(registry.path),
                                 "--timeout", "5"], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    finally:
        os.kill(pilot.process.pid, signal.SIGCONT)
    assert pilot.process.wait(30) == 0
    assert registry.get(entry.id) is None


def test_dead_server_is_restarted_in_place_up_to_the_cap(fleet: StubFleet,
                                                         registry: Registry) -> None:
    pilot = fleet.start("m1", ttl=1.5, extra=("--max-restarts", "2"))
    entry = fleet.wait_ready(pilot)
    for restarts in (1, 2):
        server = pilot.server_pid
        assert server is not None
        os.kill(server, signal.SIGKILL)

        def restarted(n: int = restarts, old: int = server) -> bool:
            current = registry.get(entry.id)
            return (current is not None and current.state == "ready"
                    and current.extra.get("restarts") == n and pilot.server_pid != old)

        wait_until(restarted, 30, f"restart {restarts}")
        (again,) = registry.endpoints("m1")
        assert (again.id, again.url, again.api_key) == (entry.id, entry.url, entry.api_key)
    os.kill(pilot.server_pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert pilot.process.wait(30) == 1
    assert registry.get(entry.id) is None
    log = pilot.log.read_text()
    assert "server exited with status -9; restarted 2 time(s) in the last 600 s" in log


def test_engine_stuck_behind_a_live_front_end_leaves_ready(fleet: StubFleet,
                                                          registry: Registry) -> None:
    """`/health` still answers, but requests are held and the token counters stand still
    (vLLM's "Running: N reqs" hang): the entry leaves ready all the same."""
    pilot = fleet.start("m1", ttl=1.5, hang_after=1, extra=(*FAST_PROBES, "--stall-timeout", "2"))
    entry = fleet.wait_ready(pilot)
    client = openai.OpenAI(base_url=entry.url, api_key=entry.api_key, max_retries=0, timeout=1)
    client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "one"}])
    with pytest.raises(openai.APITimeoutError):  # held by the stuck engine
        client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "two"}])
    wait_until(lambda: state(registry, entry.id) == "unhealthy", 20,
               "the stuck server's entry to leave ready")
    assert registry.endpoints("m1") == []
    assert "1 request(s) in flight and no progress for" in pilot.log.read_text()
