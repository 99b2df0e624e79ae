"""Pool files under the registry's rules: confined, never blocking, trusted owners, typed fields.

`pools/<id>.json`, `pools/<id>.stop`, `pools/<id>.progress` and `pools/workflows/<run>.json` are
read like registry entries: a bad file is a reported problem, never a hang, a traceback, a file
outside the registry, or raw terminal control in the output.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from nerschat.cli.endpoints import ls
from nerschat.cli.pool import pool
from nerschat.errors import UsageError
from nerschat.pool import Member, PoolSpec, PoolState
from nerschat.pool import progress as report_files
from nerschat.pool import state as store
from nerschat.pool.backend import LaunchBackend, squeue_jobs
from nerschat.pool.progress import WorkflowReporter, remaining, workflow_dir
from nerschat.registry import Registry, RegistryError
from nerschat.slurm import is_job_id

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


def finishes(call: Callable[[], Any]) -> Any:
    """`call()`'s result; fails (instead of hanging the suite) if it blocks on a file."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001 -- re-raised below
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "blocked reading a pool file"
    if "error" in box:
        raise box["error"]
    return box.get("value")


def good_state(pool_id: str = "p") -> PoolState:
    now = time.time()
    return PoolState(pool_id, "stub", "m", 1, 2, 1, now - 60, heartbeat_at=now,
                     members=[Member("m.1", "123", True, now - 50, phase="ready")])


def state_data(**changes: Any) -> dict[str, Any]:
    data = good_state().to_dict()
    data.update(changes)
    return data


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "reg")
    store.write_state(reg, good_state())
    return reg


def run(*args: str) -> Result:
    return CliRunner().invoke(pool, list(args))


def usage_error(result: Result) -> str:
    """The one-line message of the UsageError (exit status 2) a command ended with."""
    assert isinstance(result.exception, UsageError), (result.output, result.exception)
    assert result.exception.exit_code == 2
    return str(result.exception)


# -- confinement ----------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["stop", "--no-wait"], ["status"], ["resume"],
                                     ["progress", "--done", "1"]])
def test_pool_ids_with_a_path_are_refused_and_nothing_outside_is_touched(
        registry: Registry, tmp_path: Path, command: list[str]) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.json"
    victim.write_text(json.dumps(state_data(id="victim")))
    os.chmod(victim, 0o600)
    result = run(command[0], "../../outside/victim", *command[1:],
                 "--registry", str(registry.path))
    assert usage_error(result) and "is not a pool id" in usage_error(result)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.json"]  # no victim.stop
    assert not list(tmp_path.glob("*.stop")) and not list(tmp_path.glob("*.progress"))


def test_pool_ids_are_checked_by_every_path_helper_and_the_python_api(
        registry: Registry) -> None:
    for helper in (store.state_path, store.stop_path, store.progress_path):
        with pytest.raises(UsageError, match="is not a pool id"):
            helper(registry, "../x")
    with pytest.raises(UsageError, match="is not a pool id"):
        store.request_stop(registry, "a/b")
    with pytest.raises(UsageError, match="is not a pool id"):
        from nerschat.pool import Pool

        Pool("stub", "m", registry=registry, pool_id="../p")
    detach = CliRunner().invoke(pool, ["start", "--engine", "stub", "--model", "m", "--detach",
                                       "--id", "../../x", "--registry", str(registry.path)])
    assert "is not a pool id" in usage_error(detach)
    assert not (registry.path.parent / "x.log").exists()


def test_a_pools_directory_that_is_a_link_is_refused_in_one_line(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    registry.ensure()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (registry.path / "pools").symlink_to(elsewhere)
    with pytest.raises(RegistryError, match="symbolic link"):
        store.write_state(registry, good_state())
    assert list(elsewhere.iterdir()) == []
    result = CliRunner().invoke(ls, ["--pool", "--registry", str(registry.path)])
    assert "symbolic link" in usage_error(result)


# -- files that are not plain, trusted, typed state files -------------------------------------


def listing(registry: Registry) -> Result:
    result = finishes(lambda: run("status", "--registry", str(registry.path)))
    assert isinstance(result, Result)
    return result


def test_a_fifo_or_a_link_to_a_device_is_a_problem_not_a_hang(registry: Registry) -> None:
    pools = registry.path / "pools"
    os.mkfifo(pools / "zz.json", 0o600)
    (pools / "big.json").symlink_to("/dev/zero")
    os.mkfifo(pools / "p.stop", 0o600)
    scan = finishes(lambda: store.scan_states(registry))
    assert [s.id for s in scan.states] == ["p"]
    reasons = {p.path.name: p.reason for p in scan.problems}
    assert "FIFO" in reasons["zz.json"] and "symbolic link" in reasons["big.json"]
    result = listing(registry)
    assert result.exit_code == 0, result.output
    shown = result.output.replace("\n", "")  # long paths wrap
    assert "skipped" in shown and "zz.json: a FIFO" in shown
    assert "big.json: a symbolic link" in shown
    os.mkfifo(pools / "\x1b[31m[bold]x.json", 0o600)  # a hostile name is shown escaped too
    named = listing(registry).output.replace("\n", "")
    assert "\x1b" not in named and "\\x1b[31m[bold]x.json: a FIFO" in named
    with pytest.raises(store.PoolNotFound, match="FIFO"):
        finishes(lambda: store.read_state(registry, "zz"))
    assert not store.stop_requested(registry, "p")  # a FIFO is not a stop request
    os.mkfifo(store.progress_path(registry, "p"), 0o600)
    assert finishes(lambda: store.read_progress(registry, "p")) is None


def test_a_huge_state_file_is_not_read(registry: Registry) -> None:
    path = registry.path / "pools" / "huge.json"
    with open(path, "wb") as handle:
        handle.truncate(store.MAX_STATE_BYTES + 1)
    os.chmod(path, 0o600)
    reasons = {p.path.name: p.reason for p in store.scan_states(registry).problems}
    assert "more than" in reasons["huge.json"]


@needs_root
def test_a_state_file_of_another_user_is_not_trusted_unless_the_team_group_owns_it(
        registry: Registry) -> None:
    path = registry.path / "pools" / "q.json"
    path.write_text(json.dumps(state_data(id="q")))
    os.chmod(path, 0o600)
    os.chown(path, 65534, 65534)
    scan = store.scan_states(registry)
    assert [s.id for s in scan.states] == ["p"]
    assert "owned by" in {p.path.name: p.reason for p in scan.problems}["q.json"]
    with pytest.raises(store.PoolNotFound, match="owned by"):
        store.read_state(registry, "q")
    stop = registry.path / "pools" / "p.stop"
    stop.write_text("stop\n")
    os.chown(stop, 65534, 65534)
    assert not store.stop_requested(registry, "p")
    # A team registry (setgid, group-owned) trusts its group's files.
    for directory in (registry.path, registry.path / "pools"):
        os.chown(directory, -1, 4242)
        os.chmod(directory, 0o2770)
    os.chown(path, 65534, 4242)
    os.chown(stop, 65534, 4242)
    assert sorted(s.id for s in store.scan_states(registry).states) == ["p", "q"]
    assert store.stop_requested(registry, "p")


@pytest.mark.parametrize(("changes", "field"), [
    ({"min_replicas": "two"}, "min_replicas"),
    ({"desired": 1.5}, "desired"),
    ({"model": 7}, "model"),
    ({"model": "\x1b[31mred"}, "model"),
    ({"model": "[bold]m[/bold]"}, "model"),
    ({"status": "sleeping"}, "status"),
    ({"heartbeat_at": "now"}, "heartbeat_at"),
    ({"members": {"a": 1}}, "members"),
    ({"members": [{"id": "../x", "job_id": "1", "slurm": True, "submitted_at": 1.0}]},
     "members[0].id"),
    ({"members": [{"id": "a", "job_id": "--user=root", "slurm": True, "submitted_at": 1.0}]},
     "members[0].job_id"),
    ({"members": [{"id": "a", "job_id": "1", "slurm": "yes", "submitted_at": 1.0}]},
     "members[0].slurm"),
    ({"members": [{"id": "a", "job_id": "1", "slurm": True, "submitted_at": 1.0,
                   "phase": "asleep"}]}, "members[0].phase"),
    ({"members": [{"id": "a", "job_id": "1", "slurm": True, "submitted_at": 1.0,
                   "restarts": -1}]}, "members[0].restarts"),
    ({"handovers": [{"old": "a", "new": "b", "new_ready_at": "x", "old_drain_at": 1.0}]},
     "handovers[0].new_ready_at"),
    ({"events": [1]}, "events"),
    ({"timing": {"period": "fast"}}, "timing.period"),
    ({"launch": {"options": {"a": 1}}}, "launch.options"),
    ({"id": "other"}, "id"),
])
def test_every_field_is_type_checked(registry: Registry, changes: dict[str, Any],
                                     field: str) -> None:
    path = registry.path / "pools" / "p.json"
    path.write_text(json.dumps(state_data(**changes)))
    with pytest.raises(store.PoolNotFound, match=f"field '{field.replace('[', '.')}"):
        store.read_state(registry, "p")
    (problem,) = store.scan_states(registry).problems
    assert f"field '{field}" in problem.reason
    result = listing(registry)
    assert result.exit_code == 0 and "\x1b" not in result.output


def test_a_state_readers_would_refuse_is_never_written(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    bad = good_state()
    bad.members[0].job_id = "--user=root"
    with pytest.raises(ValueError, match="not a SLURM job id"):
        store.write_state(registry, bad)
    assert not store.state_path(registry, "p").exists()


def test_text_from_state_files_is_printed_escaped(registry: Registry) -> None:
    state = good_state()
    hostile = "\x1b[2J\x1b]0;title\x07[bold red]x[/]"
    state.members[0].reason = hostile
    state.error = hostile
    state.members.append(Member("m.2", "124", True, time.time(), phase="gone", reason=hostile))
    store.write_state(registry, state)
    for result in (listing(registry),
                   CliRunner().invoke(ls, ["--pool", "--registry", str(registry.path)])):
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output
        assert "[bold red]x[/]" in result.output  # shown as text, not taken as markup
    as_json = run("status", "--json", "--registry", str(registry.path))
    assert as_json.exit_code == 0 and "\x1b" not in as_json.stdout
    assert json.loads(as_json.stdout)[0]["error"] == hostile


# -- workflow reports and logs ----------------------------------------------------------------


def test_workflow_reports_are_read_like_entries(registry: Registry) -> None:
    good = WorkflowReporter(registry, "m", 10)
    good.update(4, force=True)
    directory = workflow_dir(registry)
    os.mkfifo(directory / "fifo.json", 0o600)
    (directory / "zero.json").symlink_to("/dev/zero")
    now = time.time()
    for name, data in (("types.json", {"model": "m", "done": "4", "total": 10, "at": now}),
                       ("bool.json", {"model": "m", "done": True, "total": 10, "at": now}),
                       ("neg.json", {"model": "m", "done": 1, "total": -5, "at": now}),
                       ("nan.json", {"model": "m", "done": 1, "total": 5, "at": now,
                                     "rate": float("nan")})):
        (directory / name).write_text(json.dumps(data))
    reports, problems = finishes(lambda: report_files.scan_reports(registry))
    assert [(r.model, r.done, r.total) for r in reports] == [("m", 4, 10)]
    assert {p.path.name for p in problems} == {"fifo.json", "zero.json", "types.json",
                                              "bool.json", "neg.json", "nan.json"}
    work = finishes(lambda: remaining(registry, "m"))
    assert work is not None and (work.workflows, work.done, work.total) == (1, 4, 10)
    result = listing(registry)
    assert result.exit_code == 0 and "fifo.json" in result.output.replace("\n", "")
    good.close()


@needs_root
def test_a_workflow_report_of_another_user_is_ignored(registry: Registry) -> None:
    report = WorkflowReporter(registry, "m", 10)
    report.update(4, force=True)
    os.chown(report.path, 65534, 65534)
    assert remaining(registry, "m") is None
    assert "owned by" in report_files.scan_reports(registry)[1][0].reason


def test_a_link_as_workflows_directory_is_not_written_through(registry: Registry,
                                                              tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    workflow_dir(registry).symlink_to(elsewhere)
    WorkflowReporter(registry, "m", 10).update(1, force=True)
    assert list(elsewhere.iterdir()) == []
    assert remaining(registry, "m") is None


def test_a_member_log_that_is_a_link_or_a_fifo_gives_no_exit_reason(
        registry: Registry, tmp_path: Path) -> None:
    from nerschat.pilot.pilot import GAVE_UP

    outside = tmp_path / "victim.log"
    outside.write_text(f"{GAVE_UP} m.1: planted\n")
    registry.log_dir.joinpath("m.1.log").symlink_to(outside)
    assert store.exit_reason(registry, "m.1") is None
    os.mkfifo(registry.log_dir / "m.2.log", 0o600)
    assert finishes(lambda: store.exit_reason(registry, "m.2")) is None
    assert store.exit_reason(registry, "../victim") is None
    (registry.log_dir / "m.3.log").write_text("x" * 40000 + f"\n{GAVE_UP} m.3: too many\n")
    assert store.exit_reason(registry, "m.3") == "too many"


# -- SLURM job ids --------------------------------------------------------------------------


def test_job_ids_are_checked_and_scancel_gets_them_after_double_dash(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_run(argv: list[str], **_kwargs: Any) -> Any:
        calls.append(list(argv))

        class Done:
            returncode, stdout, stderr = 0, "", ""
        return Done()

    monkeypatch.setattr("nerschat.pool.backend.subprocess.run", fake_run)
    backend = LaunchBackend(PoolSpec("stub", "m"), registry)
    backend.cancel(Member("a", "123_4", True, 0.0))
    assert calls == [["scancel", "--", "123_4"]]
    with pytest.raises(UsageError, match="not a SLURM job id"):
        backend.cancel(Member("b", "--user=root", True, 0.0))
    assert len(calls) == 1
    assert squeue_jobs(["--user=root", "1,2"]) == {} and len(calls) == 1
    squeue_jobs(["7", "-x", "8_1"])
    assert calls[-1][:4] == ["squeue", "-h", "-j", "7,8_1"]
    assert is_job_id("42") and is_job_id("42_3")
    for bad in ("", "-1", "1 2", "1,2", "42_", "--user=root", 42, "٣"):
        assert not is_job_id(bad)


# -- members' probe defaults ------------------------------------------------------------------


def test_pool_members_probe_so_a_frozen_engine_restarts_within_30_s() -> None:
    spec = PoolSpec("stub", "m")
    args = spec.serve_args()
    values = dict(zip(args[::2], args[1::2]))
    timeout = float(values["--health-timeout"])
    failures = int(values["--health-failures"])
    unhealthy = float(values["--unhealthy-timeout"])
    assert spec.ttl is not None
    interval = spec.ttl / 3  # the pilot probes every heartbeat
    # Worst case: frozen just after a good probe; each failed probe waits `interval`, then
    # `timeout`; the pilot's loop looks once a second; the stub is back about 2 s after a kill.
    worst = failures * (interval + timeout) + 1 + unhealthy + 2
    assert worst <= 30
    # ... and not on a single slow answer: two failures, each a probe unanswered for 3 s.
    assert failures >= 2 and timeout >= 3
    override = PoolSpec("stub", "m", serve_options=("--health-timeout", "9")).serve_args()
    assert override[-2:] == ("--health-timeout", "9")  # later options win in click


def test_a_pool_whose_state_readers_would_refuse_fails_at_once(tmp_path: Path) -> None:
    from nerschat.pool import Pool

    with pytest.raises(UsageError, match="field 'model': brackets"):
        Pool("stub", "[bold]m", registry=Registry(tmp_path / "reg"), pool_id="p")
    assert not (tmp_path / "reg" / "pools").exists()


def test_the_controller_log_is_never_written_through_a_link(registry: Registry,
                                                           tmp_path: Path) -> None:
    from nerschat.cli.pool import _detach

    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    registry.log_dir.joinpath("p2.log").symlink_to(victim)
    with pytest.raises(UsageError, match="symbolic link"):
        _detach(registry, "p2", argv=["--version"])
    assert victim.read_text() == "mine\n"
