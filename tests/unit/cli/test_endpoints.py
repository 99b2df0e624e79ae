"""`nerschat ls / wait / stop` against registries holding planted files (field cases)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nerschat.registry import Registry
from tests.conftest import make_endpoint

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NERSCHAT, *args], capture_output=True, text=True, timeout=timeout)


def plant(registry: Registry, name: str, **changes: object) -> None:
    data = {**make_endpoint().to_dict(), "id": name, **changes}
    (registry.path / "old-pilot.json").write_text(json.dumps(data))


def test_ls_prune_and_stop_all_touch_nothing_outside(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.ensure()
    (tmp_path / "precious").mkdir()
    for name in ("manifest.json", "manifest.stop"):
        (tmp_path / "precious" / name).write_text("{}")
    plant(registry, "../precious/manifest", heartbeat_at=time.time() - 3600)
    result = run_cli("ls", "--prune", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    assert "skipped" in result.stderr and "'id'" in result.stderr
    result = run_cli("stop", "--all", "--registry", str(registry.path), "--timeout", "1")
    assert result.returncode == 0 and "nothing to stop" in result.stderr
    result = run_cli("stop", "../precious/manifest", "--registry", str(registry.path))
    assert result.returncode == 2 and "not an endpoint id" in result.stderr
    assert sorted(os.listdir(tmp_path / "precious")) == ["manifest.json", "manifest.stop"]


def test_ls_never_echoes_escapes_or_markup(registry: Registry) -> None:
    registry.publish(make_endpoint(id="fine"))
    plant(registry, "old-pilot", model="\x1b]0;pwned\x07\x1b[2J[blink]m1[/blink]")
    for args in (["ls"], ["ls", "--json"]):
        result = run_cli(*args, "--registry", str(registry.path))
        assert result.returncode == 0, result.stderr
        for stream in (result.stdout, result.stderr):
            assert "\x1b" not in stream and "\x07" not in stream
        assert "old-pilot.json" in result.stderr and "control character" in result.stderr


def test_wait_returns_by_its_timeout_despite_a_fifo(registry: Registry) -> None:
    os.mkfifo(registry.path / "aaa.json")
    started = time.monotonic()
    result = run_cli("wait", "--model", "m", "--timeout", "2", "--registry", str(registry.path),
                     timeout=30)
    assert result.returncode == 1
    assert "no ready endpoint after 2 s" in result.stderr
    assert time.monotonic() - started < 20  # not a speed test: the old reader never returned


def test_stop_leaves_a_team_directory_mode_alone(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o2770)
    Registry(team, shared=True).publish(make_endpoint(id="p1"))
    result = run_cli("stop", "p1", "--no-wait", "--registry", str(team))
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(team).st_mode) == 0o2770
    assert (team / "p1.stop").exists()


def test_refused_directory_is_one_line_exit_2(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    os.chown(foreign, 65534, 65534)
    for args in (["ls"], ["wait", "--model", "m", "--timeout", "1"], ["stop", "--all"]):
        result = run_cli(*args, "--registry", str(foreign))
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "belongs to user nobody" in result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("command", "takes_shared"), [
    ("serve", True), ("stop", True), ("launch", True), ("ls", False), ("wait", False), ("judge", False),
    ("run-batch", False), ("embed", False), ("chat", False),
])
def test_shared_only_where_it_acts(command: str, takes_shared: bool) -> None:
    from click.testing import CliRunner

    from nerschat.cli.main import cli

    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert ("--shared" in result.output) == takes_shared
    assert "--registry" in result.output


def test_ls_shows_an_entry_past_its_walltime_as_expired(tmp_path: Path) -> None:
    """Suspicious item of the field attack: an entry whose walltime ended was listed ready."""
    registry = Registry(tmp_path / "registry")
    registry.publish(make_endpoint(id="over", expires_at=time.time() - 5))
    registry.publish(make_endpoint(id="sick", state="unhealthy"))
    result = run_cli("ls", "--json", "--registry", str(registry.path))
    assert result.returncode == 0, result.stderr
    status = {row["id"]: row["status"] for row in json.loads(result.stdout)}
    assert status == {"over": "expired", "sick": "unhealthy"}
    table = run_cli("ls", "--registry", str(registry.path))
    assert table.returncode == 0 and "expired" in table.stdout, table.stderr
    waited = run_cli("wait", "--model", "m1", "--timeout", "1", "-q",
                     "--registry", str(registry.path))
    assert waited.returncode != 0 and waited.stdout == ""
