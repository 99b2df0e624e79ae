"""A pilot never publishes somebody else's server: a taken port is refused or replaced.

Field case `port-collision-false-ready`: another server already answers `/health` on the port
the pilot was given; a bare health probe took it for the pilot's own server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

import nerschat.pilot.pilot as pilot_module
from nerschat.pilot.pilot import Pilot, PilotConfig, free_port
from nerschat.registry import Endpoint, Registry
from nerschat.testing.fleet import wait_until

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


@pytest.fixture
def other_server(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A stub server that is not the pilot's, on a free port; yields (port, its API key)."""
    port, key = free_port(), "the-other-servers-key"
    process = subprocess.Popen(
        [sys.executable, "-m", "nerschat.testing.stub_server", "--host", "0.0.0.0",
         "--port", str(port), "--model", "other"],
        env={**os.environ, "VLLM_API_KEY": key}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return httpx2.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx2.HTTPError:
            return False

    try:
        wait_until(answers, 30, "the other server")
        yield port, key
    finally:
        process.terminate()
        process.wait(10)


def test_explicit_port_answered_by_another_server_is_refused(other_server: tuple[int, str],
                                                             registry: Registry) -> None:
    port, _ = other_server
    result = subprocess.run(
        [*NERSCHAT, "serve", "--engine", "stub", "--model", "mine", "--port", str(port),
         "-E", "startup_delay=8", "--registry", str(registry.path)],
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"port {port} is already in use" in lines[0], result.stderr
    assert "choose another --port" in lines[0]
    assert registry.scan().entries == []  # never published, not even as starting


def test_explicit_port_held_by_any_socket_is_refused(registry: Registry) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = subprocess.run(
            [*NERSCHAT, "serve", "--engine", "stub", "--model", "mine", "--port", str(port),
             "--registry", str(registry.path)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and f"port {port} is already in use" in result.stderr


@pytest.mark.parametrize("same_key", [False, True], ids=["other-key", "same-key"])
def test_auto_port_taken_moves_to_a_fresh_port(other_server: tuple[int, str], same_key: bool,
                                               registry: Registry,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The auto-picked port is taken before our server listens: not ready there, retried.

    With the same API key only /proc tells the servers apart (the listening socket is not in
    the server's process tree)."""
    taken, other_key = other_server
    picks = iter([taken])
    monkeypatch.setattr(pilot_module, "free_port", lambda host="": next(picks, None) or free_port())
    config = PilotConfig(engine="stub", model="mine", options={"startup_delay": 1.5},
                         api_key=other_key if same_key else None, linger=0, ttl=3)
    pilot = Pilot(config, registry)
    published: list[Endpoint] = []

    def on_ready(entry: Endpoint) -> None:
        published.append(Endpoint.from_dict(entry.to_dict()))
        pilot.stop.set("test done")

    assert pilot.run(on_ready=on_ready) == 0
    (entry,) = published
    assert entry.model == "mine" and f":{taken}/" not in entry.url
    assert registry.scan().entries == []
