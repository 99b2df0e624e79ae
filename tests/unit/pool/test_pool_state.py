"""Pool state files, accounting and the `nerschat pool` command line."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from nerschat.cli.pool import parse_duration, parse_replicas, pool
from nerschat.errors import UsageError
from nerschat.pool import Handover, Member, PoolState, usage
from nerschat.pool import state as store
from nerschat.registry import Registry


def sample_state() -> PoolState:
    t0 = 1_000_000.0
    members = [
        Member("a", "11", True, t0, gpus=4, phase="gone", started_at=t0 + 600,
               ended_at=t0 + 600 + 3600, reason="handed over"),
        Member("b", "12", True, t0 + 3000, gpus=4, phase="ready", started_at=t0 + 3300,
               ready_at=t0 + 3400, expires_at=t0 + 20000),
        Member("c", "13", True, t0 + 3000, gpus=4, phase="pending"),
    ]
    return PoolState("p", "vllm", "m", 2, 2, 2, t0, members=members,
                     handovers=[Handover("a", "b", t0 + 3400, t0 + 3420, 300.0)],
                     heartbeat_at=t0 + 7500)


def test_usage_counts_each_job_from_its_start_to_its_end_or_now() -> None:
    state = sample_state()
    now = state.created_at + 7500
    # a: 1 h x 4 GPUs; b: running 4200 s x 4 GPUs; c: never started.
    result = usage(state, now, (1400, 5000))
    assert result.replica_hours == pytest.approx(1 + 4200 / 3600)
    assert result.gpu_hours == pytest.approx(4 + 4 * 4200 / 3600)
    assert result.items_per_gpu_hour == pytest.approx(1400 / result.gpu_hours)
    assert result.items_per_gpu_hour is not None
    assert result.gpu_hours_rest == pytest.approx(3600 / result.items_per_gpu_hour)
    assert usage(state, now).items_per_gpu_hour is None
    assert usage(state, now, (0, 10)).gpu_hours_rest is None


def test_state_round_trips_privately_and_unknown_ids_are_one_line(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    state = sample_state()
    store.write_state(registry, state)
    path = store.state_path(registry, "p")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    back = store.read_state(registry, "p")
    assert back == state
    assert json.loads(path.read_text())["handovers"][0]["overlap_s"] == 20.0
    # A pool state never shows up as a broken endpoint entry.
    assert registry.scan().problems == [] and registry.scan().entries == []
    with pytest.raises(store.PoolNotFound, match="no pool 'q'"):
        store.read_state(registry, "q")
    path.write_text("[1, 2]")
    with pytest.raises(store.PoolNotFound, match="not a pool state"):
        store.read_state(registry, "p")
    assert store.list_states(registry) == []


def test_progress_is_read_back_and_garbage_ignored(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    assert store.read_progress(registry, "p") is None
    store.write_progress(registry, "p", 12, 100)
    assert store.read_progress(registry, "p") == (12, 100)
    store.progress_path(registry, "p").write_text("{\"done\": \"x\"}")
    assert store.read_progress(registry, "p") is None


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("15m", 900), ("2h", 7200),
                                               ("00:03:00", 180), ("1:30", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_replica_ranges() -> None:
    assert parse_replicas("2") == (2, 2)
    assert parse_replicas("2..8") == (2, 8)
    for bad in ("0", "3..2", "x", "2-4"):
        with pytest.raises(UsageError):
            parse_replicas(bad)
    with pytest.raises(UsageError):
        parse_duration("soon")


def test_status_and_stop_from_another_process(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    state = sample_state()
    store.write_state(registry, state)
    runner = CliRunner()
    done = runner.invoke(pool, ["progress", "p", "--done", "1400", "--total", "5000",
                                "--registry", str(registry.path)])
    assert done.exit_code == 0, done.output
    out = runner.invoke(pool, ["status", "--json", "--registry", str(registry.path)])
    assert out.exit_code == 0, out.output
    (shown,) = json.loads(out.stdout)
    assert shown["id"] == "p" and shown["ready"] == 1 and shown["desired"] == 2
    assert shown["usage"]["items_done"] == 1400 and shown["usage"]["gpu_hours"] > 4
    text = runner.invoke(pool, ["status", "p", "--registry", str(registry.path)])
    assert text.exit_code == 0 and "hand-over a -> b: overlap 20.0s" in text.output
    unknown = runner.invoke(pool, ["stop", "nope", "--registry", str(registry.path)])
    assert unknown.exit_code != 0 and not store.stop_requested(registry, "nope")
    stop = runner.invoke(pool, ["stop", "p", "--no-wait", "--registry", str(registry.path)])
    assert stop.exit_code == 0 and store.stop_requested(registry, "p")


def test_launch_keep_needs_one_engine_and_model(tmp_path: Path) -> None:
    from nerschat.cli.launch import launch

    out = CliRunner().invoke(launch, ["--keep", "--pack", "stub:a", "--registry",
                                      str(tmp_path / "reg")])
    assert isinstance(out.exception, UsageError) and "--keep needs" in str(out.exception)


def test_workflow_reports_are_summed_per_model_and_dead_or_bad_ones_ignored(
        tmp_path: Path) -> None:
    from nerschat.pool.progress import FRESH_FOR, WorkflowReporter, remaining, workflow_dir

    registry = Registry(tmp_path / "reg")
    assert remaining(registry, "m") is None
    one, two = WorkflowReporter(registry, "m", 100), WorkflowReporter(registry, "m", 50)
    other = WorkflowReporter(registry, "other", 7)
    one.update(40, force=True)
    two.update(10, force=True)
    other.update(1, force=True)
    (workflow_dir(registry) / "garbage.json").write_text("{not json")
    (workflow_dir(registry) / "wrong.json").write_text('{"model": "m", "done": "x"}')
    work = remaining(registry, "m")
    assert work is not None
    assert (work.workflows, work.done, work.total, work.remaining) == (2, 50, 150, 100)
    assert oct(one.path.stat().st_mode & 0o777) == "0o600"
    assert remaining(registry, "m", now=time.time() + FRESH_FOR + 1) is None  # dead workflows
    one.close()
    two.close()
    assert remaining(registry, "m") is None
