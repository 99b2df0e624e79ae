from __future__ import annotations

import json
import multiprocessing
import os
import stat
import time
from pathlib import Path

import pytest

from nerschat.registry import Endpoint, Registry, default_registry_path
from tests.conftest import make_endpoint


def test_publish_and_read_back(registry: Registry) -> None:
    entry = make_endpoint()
    registry.publish(entry)
    assert registry.get("e1") == entry
    assert registry.endpoints("m1") == [entry]
    assert registry.endpoints("other") == []
    assert registry.endpoints(kind="embedding") == []


def test_private_permissions(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r")
    reg.publish(make_endpoint())
    assert stat.S_IMODE(os.stat(reg.path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(reg.entry_path("e1")).st_mode) == 0o600


def test_shared_permissions(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r", shared=True)
    reg.publish(make_endpoint())
    assert stat.S_IMODE(os.stat(reg.path).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(reg.entry_path("e1")).st_mode) == 0o640


def test_stale_entries_are_not_usable(registry: Registry) -> None:
    registry.publish(make_endpoint(id="old", heartbeat_at=time.time() - 100, ttl=10))
    registry.publish(make_endpoint(id="new"))
    assert [e.id for e in registry.endpoints()] == ["new"]
    assert {e.id for e in registry.endpoints(include_unusable=True)} == {"old", "new"}
    assert [e.id for e in registry.prune()] == ["old"]
    assert not registry.entry_path("old").exists()


def test_starting_and_draining_are_not_usable(registry: Registry) -> None:
    registry.publish(make_endpoint(id="a", state="starting"))
    registry.publish(make_endpoint(id="b", state="draining"))
    assert registry.endpoints() == []


def test_junk_files_are_reported_not_fatal(registry: Registry) -> None:
    registry.publish(make_endpoint())
    (registry.path / "garbage.json").write_text("{not json")
    (registry.path / "list.json").write_text("[1, 2]")
    (registry.path / "foreign.json").write_text(json.dumps({"schema": 1, "hello": "world"}))
    (registry.path / "badkind.json").write_text(
        json.dumps({**make_endpoint(id="x").to_dict(), "kind": "tts"}))
    (registry.path / "README.txt").write_text("ignored: not an entry")
    (registry.path / "dir.json").mkdir()
    scan = registry.scan()
    assert [e.id for e in scan.entries] == ["e1"]
    reasons = {p.path.name: p.reason for p in scan.problems}
    assert set(reasons) == {"garbage.json", "list.json", "foreign.json", "badkind.json", "dir.json"}
    assert "kind" in reasons["badkind.json"]
    assert "missing" in reasons["foreign.json"]


def test_missing_directory_reads_as_empty(tmp_path: Path) -> None:
    assert Registry(tmp_path / "nope").endpoints() == []


def test_default_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NERSCHAT_REGISTRY", str(tmp_path / "env"))
    assert default_registry_path() == tmp_path / "env"
    assert Registry().path == tmp_path / "env"
    monkeypatch.delenv("NERSCHAT_REGISTRY")
    assert default_registry_path() == Path.home() / ".nerschat" / "registry"


def test_stop_requests(registry: Registry) -> None:
    registry.publish(make_endpoint())
    assert not registry.stop_requested("e1")
    registry.request_stop("e1")
    assert registry.stop_requested("e1")
    assert [e.id for e in registry.scan().entries] == ["e1"]  # stop files are not entries
    registry.remove("e1")
    assert not registry.stop_requested("e1") and registry.get("e1") is None


def test_public_dict_hides_the_key() -> None:
    assert make_endpoint().public_dict()["api_key"] == "***"


def _writer(path: str, rounds: int, worker: int) -> None:
    reg = Registry(path)
    for i in range(rounds):
        # Entries of very different sizes: a torn write would show as invalid JSON.
        reg.publish(make_endpoint(id="shared", extra={"w": worker, "pad": "x" * (i % 7) * 5000}))


def _reader(path: str, rounds: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    reg = Registry(path)
    seen = bad = 0
    for _ in range(rounds):
        scan = reg.scan()
        seen += len(scan.entries)
        bad += len(scan.problems)
    queue.put((seen, bad))


def test_concurrent_writers_and_readers_never_see_partial_files(registry: Registry) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(str(registry.path), 300, w)) for w in range(3)]
    readers = [ctx.Process(target=_reader, args=(str(registry.path), 600, queue)) for _ in range(2)]
    for p in writers + readers:
        p.start()
    for p in writers + readers:
        p.join(60)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in readers]
    assert all(bad == 0 for _, bad in results), results
    assert sum(seen for seen, _ in results) > 0
    leftovers = [n for n in os.listdir(registry.path) if n.endswith(".tmp")]
    assert leftovers == []
    assert isinstance(registry.get("shared"), Endpoint)
