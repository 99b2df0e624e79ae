"""`RegistryView` and in-place heartbeats: what a refresh costs and what it notices."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nerschat.registry as registry_module
from nerschat.client.routing import EndpointPool
from nerschat.registry import Registry, RegistryView
from tests.conftest import make_endpoint


@pytest.fixture
def fs_calls(monkeypatch: pytest.MonkeyPatch, registry: Registry) -> Iterator[Counter[str]]:
    """Counts file-system calls on paths inside the registry (and on the directory)."""
    counts: Counter[str] = Counter()
    root = str(registry.path)

    def counting(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            if str(path).startswith(root):
                counts[name] += 1
            return real(path, *args, **kwargs)
        return call

    for name in ("open", "stat", "lstat", "scandir", "listdir"):
        monkeypatch.setattr(os, name, counting(name, getattr(os, name)))
    yield counts


def fill(registry: Registry, n: int) -> None:
    for i in range(n):
        registry.publish(make_endpoint(id=f"e{i:03d}", model=f"m{i % 4}"))


def test_unchanged_registry_costs_one_stat(registry: Registry, fs_calls: Counter[str]) -> None:
    fill(registry, 50)
    view = RegistryView(registry)
    assert len(view.entries()) == 50
    fs_calls.clear()
    time.sleep(registry_module.SETTLE_SECONDS)  # a directory changed just now is listed twice
    view.refresh()
    fs_calls.clear()
    for _ in range(20):
        assert len(view.entries()) == 50
    assert fs_calls == Counter(stat=20)


def test_heartbeats_do_not_change_the_directory(registry: Registry) -> None:
    entry = make_endpoint(heartbeat_at=time.time() - 20)
    registry.publish(entry)
    before_dir = os.stat(registry.path)
    inode = os.stat(registry.entry_path("e1")).st_ino
    registry.heartbeat(entry)
    after = os.stat(registry.entry_path("e1"))
    assert after.st_ino == inode  # renewed in place, no rename
    assert os.stat(registry.path).st_mtime_ns == before_dir.st_mtime_ns
    assert abs(after.st_mtime - entry.heartbeat_at) < 0.01
    (read,) = registry.scan().entries
    assert abs(read.heartbeat_at - entry.heartbeat_at) < 0.01  # readers take the mtime
    assert '"heartbeat_at"' in registry.entry_path("e1").read_text()  # still `cat`-able JSON


def test_heartbeat_publishes_when_the_entry_changed_or_vanished(registry: Registry) -> None:
    entry = make_endpoint(state="starting")
    registry.publish(entry)
    inode = os.stat(registry.entry_path("e1")).st_ino
    entry.state = "ready"
    registry.heartbeat(entry)
    assert os.stat(registry.entry_path("e1")).st_ino != inode
    assert registry.get("e1").state == "ready"  # type: ignore[union-attr]
    registry.entry_path("e1").unlink()  # e.g. pruned while the pilot was suspended
    registry.heartbeat(entry)
    assert registry.get("e1") is not None


def test_heartbeat_without_recreate_reports_a_removed_entry(
        registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    entry = make_endpoint()
    registry.publish(entry)
    calls: Counter[str] = Counter()
    real_utime, real_exists = os.utime, Path.exists
    monkeypatch.setattr(os, "utime", lambda *a, **k: (calls.update(["utime"]),
                                                       real_utime(*a, **k))[1])
    monkeypatch.setattr(Path, "exists", lambda self, **k: (calls.update(["exists"]),
                                                            real_exists(self, **k))[1])
    assert registry.heartbeat(entry, recreate=False)
    assert calls == Counter(utime=1)  # one metadata operation per heartbeat, no stat
    registry.remove("e1")  # a stop or prune took it
    assert not registry.heartbeat(entry, recreate=False)
    assert not registry.entry_path("e1").exists()  # not written again
    entry.state = "draining"  # a changed entry is not written back either
    assert not registry.heartbeat(entry, recreate=False)
    assert not registry.entry_path("e1").exists()


def test_view_notices_added_changed_and_removed_entries(registry: Registry) -> None:
    fill(registry, 3)
    view = registry.view()
    assert [e.id for e in view.entries()] == ["e000", "e001", "e002"]
    registry.publish(make_endpoint(id="e003"))
    registry.remove("e000")
    registry.publish(make_endpoint(id="e001", state="draining"))
    entries = {e.id: e for e in view.entries()}
    assert sorted(entries) == ["e001", "e002", "e003"]
    assert entries["e001"].state == "draining"
    (registry.path / "junk.json").write_text("{")
    assert [p.path.name for p in view.refresh().problems] == ["junk.json"]


def test_a_dead_pilot_turns_stale_when_rechecked(registry: Registry) -> None:
    old = time.time() - 60  # both published a minute ago, then renewed in place
    for endpoint_id in ("alive", "dead"):
        registry.publish(make_endpoint(id=endpoint_id, ttl=5.0, heartbeat_at=old))
        os.utime(registry.entry_path(endpoint_id))
    view = registry.view()
    assert all(e.is_usable() for e in view.entries())
    os.utime(registry.entry_path("dead"), (old, old))  # its last heartbeat, as if it died then
    registry.heartbeat(registry.get("alive"))  # type: ignore[arg-type]
    # Not asked to re-check: the view keeps what it saw (no per-entry stat).
    assert all(e.is_usable() for e in view.entries())
    time.sleep(registry_module.RECHECK_GAP)
    usable = [e.id for e in view.entries(recheck=["dead"]) if e.is_usable()]
    assert usable == ["alive"]


class _Clock:
    """`time` for nerschat.registry with a movable monotonic clock."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


def test_stale_entries_are_rechecked_with_back_off(registry: Registry,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(registry_module, "time", clock)
    registry.publish(make_endpoint(heartbeat_at=time.time() - 100, ttl=10.0))
    view = registry.view()
    assert not view.entries()[0].is_usable()
    os.utime(registry.entry_path("e1"))  # the pilot was suspended and beats again
    assert not view.entries()[0].is_usable()  # not due yet
    clock.offset += registry_module.STALE_RECHECK_FIRST + 0.1
    assert view.entries()[0].is_usable()


def test_pool_drops_a_failing_endpoint_whose_heartbeat_stopped(registry: Registry) -> None:
    old = time.time() - 60  # published a minute ago, heartbeats renewed in place since
    for endpoint_id in ("a", "b"):
        registry.publish(make_endpoint(id=endpoint_id, ttl=5.0, heartbeat_at=old))
        os.utime(registry.entry_path(endpoint_id))
    pool = EndpointPool(registry, "m1", min_refresh_gap=0.0)
    pool.refresh(force=True)
    assert [load.id for load in pool.loads()] == ["a", "b"]
    os.utime(registry.entry_path("b"), (old, old))  # pilot b died (SIGKILL: no clean-up)
    load = pool.acquire()
    while load.id != "b":
        pool.release(load, ok=True)
        load = pool.acquire()
    pool.release(load, ok=False)  # what the transport does on a refused connection
    time.sleep(registry_module.RECHECK_GAP)
    pool.refresh(force=True)
    assert [load.id for load in pool.loads()] == ["a"]


def test_scan_reads_afresh(registry: Registry, fs_calls: Counter[str]) -> None:
    fill(registry, 5)
    fs_calls.clear()
    registry.scan()
    assert fs_calls["open"] == 5 and fs_calls["scandir"] == 1


def test_view_refresh_on_missing_directory(tmp_path: Path) -> None:
    view = Registry(tmp_path / "none").view()
    assert view.entries() == []


def test_a_quiet_directory_is_checked_less_often(registry: Registry, fs_calls: Counter[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(registry_module, "time", clock)
    fill(registry, 3)
    time.sleep(registry_module.SETTLE_SECONDS)
    view = RegistryView(registry)
    view.refresh()
    clock.offset += registry_module.QUIET_AFTER
    view.refresh()
    fs_calls.clear()
    for _ in range(10):
        assert len(view.entries()) == 3
    assert fs_calls == Counter()  # quiet and checked just now: answered from memory
    registry.publish(make_endpoint(id="late"))
    assert len(view.entries()) == 3
    assert len(view.entries(recheck=["e000"])) == 4  # a failure report checks at once
    registry.publish(make_endpoint(id="later"))
    clock.offset += registry_module.QUIET_CHECK_GAP
    assert len(view.entries()) == 5  # found within QUIET_CHECK_GAP without any failure
