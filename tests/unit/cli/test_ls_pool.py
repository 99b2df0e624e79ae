"""`nerschat ls --pool`: per pool, desired replicas, members' jobs and phases, accounting."""

from __future__ import annotations

import json
import time
from pathlib import Path

from click.testing import CliRunner

from nerschat.cli.endpoints import ls
from nerschat.pool import Member, PoolState
from nerschat.pool import state as store
from nerschat.pool.progress import WorkflowReporter
from nerschat.registry import Registry


def running_pool(registry: Registry) -> PoolState:
    now = time.time()
    members = [
        Member("m.old", "11", True, now - 7200, gpus=4, phase="gone", started_at=now - 7200,
               ended_at=now - 3600,
               reason="lost (its pilot gave up: server exited with status -9; restarted 2 "
                      "time(s) in the last 600 s already, the most --max-restarts allows)\x1b[31m"),
        Member("m.new", "12", True, now - 3700, gpus=4, phase="restarting", restarts=1,
               started_at=now - 3600, ready_at=now - 3500, expires_at=now + 3600,
               down_since=now - 5),
        Member("m.more", "13", True, now - 60, gpus=4, phase="pending"),
    ]
    state = PoolState("p1", "vllm", "llama", 2, 4, 3, now - 7200, members=members,
                      heartbeat_at=now)
    store.write_state(registry, state)
    stopped = PoolState("p0", "vllm", "llama", 1, 1, 1, now - 9000, status="stopped")
    store.write_state(registry, stopped)
    return state


def test_ls_pool_shows_replicas_members_and_accounting(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    running_pool(registry)
    report = WorkflowReporter(registry, "llama", total=3000)
    report._started -= 100  # 10 items/s
    report.update(1000, force=True)
    result = CliRunner().invoke(ls, ["--pool", "--registry", str(registry.path)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "p1 vllm:llama running: desired 3 (replicas 2..4), ready 0" in out
    assert "p0" not in out  # stopped pools are not listed
    for shown in ("m.old", "11", "gone", "m.new", "12", "restarting", "m.more", "pending"):
        assert shown in out
    assert "its pilot gave up: server exited with status -9" in out
    assert "\x1b" not in out and "\\x1b[31m" in out  # escaped, not sent to the terminal
    # 2 h x 4 GPUs gone at 1 h ago (4 GPU-h) + 1 h x 4 GPUs running (4 GPU-h): 8 GPU-hours.
    assert "used 8.0" in out
    assert "1000/3000 items, 125 items per GPU-hour, about 16.00 GPU-hours for the rest" in out
    assert "1 workflow(s) using it: 2000 items left at 10.00 items/s, about 3m" in out
    report.close()


def test_ls_pool_json_and_no_pools(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    empty = CliRunner().invoke(ls, ["--pool", "--registry", str(registry.path)])
    assert empty.exit_code == 0 and "no running pools" in empty.output
    running_pool(registry)
    result = CliRunner().invoke(ls, ["--pool", "--json", "--registry", str(registry.path)])
    assert result.exit_code == 0, result.output
    (shown,) = json.loads(result.stdout)
    assert (shown["id"], shown["desired"], shown["min_replicas"], shown["max_replicas"]) == \
        ("p1", 3, 2, 4)
    assert [(m["job_id"], m["phase"]) for m in shown["members"]] == \
        [("11", "gone"), ("12", "restarting"), ("13", "pending")]
    assert shown["usage"]["gpu_hours"] > 7.9 and shown["workflows"] is None
