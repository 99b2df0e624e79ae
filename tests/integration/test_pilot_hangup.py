"""A pilot's own entry and log are safe: SIGHUP drains like SIGTERM, a live id is not taken
twice, a planted log link is never followed (field attack #13, #14, duplicate pilot ids)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, pid_alive, wait_until

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]




def test_sighup_drains_and_removes_the_entry(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("hup")
    entry = fleet.wait_ready(pilot)
    server_pid = pilot.server_pid
    assert server_pid is not None
    pilot.process.send_signal(signal.SIGHUP)
    assert pilot.process.wait(30) == 0
    assert registry.get(entry.id) is None
    wait_until(lambda: not pid_alive(server_pid), 15, "the server to exit")


def test_sighup_during_start_up_removes_the_starting_entry(fleet: StubFleet,
                                                           registry: Registry) -> None:
    pilot = fleet.start("hup-start", startup_delay=60)
    wait_until(lambda: any(e.pid == pilot.process.pid and e.state == "starting"
                           for e in registry.scan().entries), 30, "the starting entry")
    (entry,) = [e for e in registry.scan().entries if e.pid == pilot.process.pid]
    pilot.process.send_signal(signal.SIGHUP)
    assert pilot.process.wait(30) == 0
    assert registry.get(entry.id) is None
    assert list(registry.path.glob("*.json")) == []


def test_a_live_pilot_id_is_not_taken_twice(fleet: StubFleet, registry: Registry) -> None:
    first = fleet.start("dup", extra=("--id", "same.id"))
    entry = fleet.wait_ready(first)
    second = subprocess.run([*NERSCHAT, "serve", "--engine", "stub", "--model", "dup", "--id",
                             "same.id", "--registry", str(registry.path)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stderr
    assert f"endpoint id same.id belongs to a live pilot (pid {first.process.pid} on " \
           f"{entry.host}, ready" in second.stderr
    assert second.stderr.count("\n") == 1
    again = registry.get("same.id")
    assert again is not None and again.pid == first.process.pid and again.url == entry.url


def test_a_planted_log_link_is_never_followed(fleet: StubFleet, registry: Registry,
                                              tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    registry.ensure()
    link = registry.log_dir / "known.id.log"
    link.symlink_to(victim)
    pilot = fleet.start("lg", extra=("--id", "known.id"))
    entry = fleet.wait_ready(pilot)
    assert victim.read_text() == "precious\n"
    assert not link.is_symlink() and link.is_file()
    assert "# nerschat pilot known.id" in link.read_text()
    assert entry.log_path == str(link)
    time.sleep(0.5)
    assert victim.read_text() == "precious\n"


def test_sighup_stops_a_router_and_removes_its_entry(registry: Registry) -> None:
    from nerschat.router.entry import live_routers
    from nerschat.testing.router import running_router

    with running_router(registry) as router:
        router.process.send_signal(signal.SIGHUP)
        assert router.process.wait(30) == 0
        assert [e for e in live_routers(registry) if e.pid == router.process.pid] == []
        assert registry.get(router.entry.id) is None
