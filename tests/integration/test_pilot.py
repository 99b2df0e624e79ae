"""The pilot's life cycle with real processes: `nerschat serve` running the stub engine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest

from nerschat.pilot.pilot import Pilot, PilotConfig, PilotError
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, pid_alive, wait_until

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NERSCHAT, *args], capture_output=True, text=True, timeout=timeout)





def test_serve_wait_chat_and_401(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("m1")
    started = time.monotonic()
    result = run_cli("wait", "--model", "m1", "--registry", str(registry.path), "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 15
    url = result.stdout.strip()
    assert url.startswith("http://") and url.endswith("/v1")
    (entry,) = registry.endpoints("m1")
    assert entry.url == url and entry.pid == pilot.process.pid
    client = openai.OpenAI(base_url=url, api_key=entry.api_key)
    reply = client.chat.completions.create(
        model="m1", messages=[{"role": "user", "content": "hello"}])
    assert reply.choices[0].message.content
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
    # The key never appears on the server's command line.
    server_pid = pilot.server_pid
    assert server_pid is not None
    cmdline = Path(f"/proc/{server_pid}/cmdline").read_bytes().decode()
    assert entry.api_key and entry.api_key not in cmdline
    assert entry.log_path and Path(entry.log_path).exists()


def test_sigterm_drains_and_exits_zero(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("m1")
    entry = fleet.wait_ready(pilot)
    server_pid = pilot.server_pid
    assert server_pid is not None
    pilot.process.send_signal(signal.SIGTERM)
    assert pilot.process.wait(20) == 0
    assert registry.get(entry.id) is None
    wait_until(lambda: not pid_alive(server_pid), 15, "the server to exit")


def test_server_killed_removes_entry_and_pilot_fails(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("m1")
    entry = fleet.wait_ready(pilot)
    os.kill(pilot.server_pid, signal.SIGKILL)  # type: ignore[arg-type]
    assert pilot.process.wait(20) != 0
    assert registry.get(entry.id) is None


def test_pilot_killed_leaves_a_stale_entry_nobody_uses(fleet: StubFleet,
                                                       registry: Registry) -> None:
    pilot = fleet.start("m1", ttl=1.5)
    entry = fleet.wait_ready(pilot)
    server_pid = pilot.server_pid
    pilot.process.kill()
    pilot.process.wait()
    wait_until(lambda: (e := registry.get(entry.id)) is not None and e.is_stale(), 15,
               "the entry to turn stale")
    assert registry.endpoints("m1") == []
    result = run_cli("wait", "--model", "m1", "--registry", str(registry.path), "--timeout", "1")
    assert result.returncode == 1
    assert "only stale entries" in result.stderr
    # The server dies with its pilot (parent-death signal), so nothing is left listening.
    wait_until(lambda: server_pid is None or not pid_alive(server_pid), 15,
               "the orphaned server to exit")


def test_entry_removed_by_someone_else_stops_the_pilot(fleet: StubFleet,
                                                       registry: Registry) -> None:
    pilot = fleet.start("m1")
    entry = fleet.wait_ready(pilot)
    registry.remove(entry.id)  # e.g. a prune that took a late heartbeat for a dead pilot
    assert pilot.process.wait(30) == 0
    assert registry.get(entry.id) is None  # the heartbeat did not write it back


def test_stop_command(fleet: StubFleet, registry: Registry) -> None:
    pilots = [fleet.start("m1"), fleet.start("m2")]
    for pilot in pilots:
        fleet.wait_ready(pilot)
    result = run_cli("stop", "--model", "m1", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert pilots[0].process.wait(20) == 0
    assert [e.model for e in registry.endpoints()] == ["m2"]
    result = run_cli("stop", "--all", "--registry", str(registry.path))
    assert result.returncode == 0 and pilots[1].process.wait(20) == 0
    assert registry.scan().entries == []


def test_ready_timeout_reports_log_tail(registry: Registry) -> None:
    config = PilotConfig(engine="stub", model="slow", ready_timeout=1.5,
                         options={"startup_delay": 30}, grace_period=2)
    with pytest.raises(PilotError, match="not ready after 2 s; last lines of"):
        Pilot(config, registry).run()
    assert registry.scan().entries == []


def test_server_that_cannot_start_reports_its_output(registry: Registry) -> None:
    config = PilotConfig(engine="stub", model="bad", extra_args=("--no-such-flag",))
    with pytest.raises(PilotError, match="exited with status 2 before it was ready"):
        Pilot(config, registry).run()
    assert registry.scan().entries == []


def test_pilot_drains_before_walltime(registry: Registry) -> None:
    expires_at = time.time() + 40
    config = PilotConfig(engine="stub", model="m1", expires_at=expires_at,
                         drain_before=34.0, ttl=3, grace_period=2)
    pilot = Pilot(config, registry)
    states: list[str] = []
    assert pilot.run(on_ready=lambda e: states.append("ready")) == 0
    assert "ready" in states
    assert time.time() < expires_at  # stopped (drained and gone) ahead of its "walltime"
    assert pilot.stop.reason and pilot.stop.reason.startswith("walltime ends in")
    assert registry.scan().entries == []


def test_bad_flags_are_one_line_errors(registry: Registry) -> None:
    result = run_cli("serve", "--engine", "nope", "--model", "m", "--registry", str(registry.path))
    assert result.returncode == 2 and "'nope' is not one of" in result.stderr
    result = run_cli("serve", "--engine", "stub", "--model", "m", "-E", "bogus=1",
                     "--registry", str(registry.path))
    assert result.returncode == 2
    assert "engine 'stub' does not take option(s) bogus" in result.stderr
    result = run_cli("serve", "--engine", "vllm", "--model", "m", "--runtime", "shifter",
                     "--registry", str(registry.path), "--engine-opt", "max_num_seqs=lots")
    assert result.returncode == 2 and "max_num_seqs='lots' is not an integer" in result.stderr
    # The old spelling still works, with a note: -o means --output in every other command.
    result = run_cli("serve", "--engine", "stub", "--model", "m", "-o", "bogus=1",
                     "--registry", str(registry.path))
    assert result.returncode == 2 and "use -E/--engine-opt" in result.stderr
    assert "-E, --engine-opt" in run_cli("serve", "--help").stdout
    result = run_cli("wait", "--registry", str(registry.path))
    assert result.returncode == 2 and "give --model or --kind" in result.stderr


def test_wait_reports_nothing_registered_and_starting(fleet: StubFleet,
                                                      registry: Registry) -> None:
    result = run_cli("wait", "--model", "m1", "--registry", str(registry.path), "--timeout", "0.5")
    assert result.returncode == 1
    assert "nothing registered for model 'm1'" in result.stderr
    fleet.start("m1", startup_delay=30)
    wait_until(lambda: bool(registry.scan().entries), 15, "a starting entry")
    result = run_cli("wait", "--model", "m1", "--registry", str(registry.path), "--timeout", "1")
    assert result.returncode == 1
    assert "1 endpoint(s) starting, the oldest for" in result.stderr


def test_ls_table_and_json(fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(1, "m1")
    table = run_cli("ls", "--registry", str(registry.path))
    assert table.returncode == 0 and "m1" in table.stdout and "ready" in table.stdout
    listing = run_cli("ls", "--json", "--registry", str(registry.path))
    import json

    (row,) = json.loads(listing.stdout)
    assert row["status"] == "ready" and row["api_key"] == "***"
