"""A pool member's engine dies twice and its pilot restarts it in place (same entry, same
job); the third death, past `--max-restarts 2`, ends the pilot: the pool records why (shown by
`nerschat ls --pool`) and replaces the member. Stub engine, local site (no SLURM needed)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from click.testing import CliRunner

from nerschat.cli.endpoints import ls
from nerschat.pool import Pool, Timing
from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until

MODEL = "pool-restarts"


def engine_pid(registry: Registry, member_id: str) -> int:
    """The engine server: the one child process of the member's pilot."""
    entry = registry.get(member_id)
    assert entry is not None
    out = subprocess.run(["pgrep", "-P", str(entry.pid)], capture_output=True, text=True,
                         check=False)
    (pid,) = out.stdout.split()
    return int(pid)


def test_engine_restarted_twice_then_the_member_ends_with_its_reason(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    pool = Pool("stub", MODEL, 1, registry=registry, site="local", max_restarts=2,
                timing=Timing(period=0.5, restart_grace=120))
    try:
        pool.start()
        pool.wait_ready(timeout=120)
        member = pool.state.members[0]
        entry = registry.get(member.id)
        assert entry is not None
        for restarts in (1, 2):
            old = engine_pid(registry, member.id)
            os.kill(old, signal.SIGKILL)
            wait_until(lambda n=restarts: member.restarts == n and member.phase == "ready",
                       60, f"restart {restarts} in place")
            again = registry.get(member.id)
            assert again is not None and (again.url, again.pid) == (entry.url, entry.pid)
            assert engine_pid(registry, member.id) != old
        assert len(pool.state.members) == 1  # restarted in place: nothing submitted
        os.kill(engine_pid(registry, member.id), signal.SIGKILL)
        wait_until(lambda: member.phase == "gone", 60, "the member to end past the cap")
        assert "its pilot gave up: stub server exited with status -9; restarted 2 time(s)" \
            in member.reason, member.reason

        def shown() -> str:
            result = CliRunner().invoke(ls, ["--pool", "--registry", str(registry.path)])
            assert result.exit_code == 0, result.output
            return result.output

        # The controller writes its state file at the end of the round that saw the loss.
        wait_until(lambda: "its pilot gave up: stub server exited with status -9" in shown(),
                   10, "ls --pool to show why the member ended")
        wait_until(lambda: len(pool.ready_endpoints()) == 1, 120, "a replacement")
        assert pool.ready_endpoints()[0].id != member.id
    finally:
        pool.stop(timeout=60)
