from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import pickle
import stat
import threading
import time
from pathlib import Path

import pytest

from nerschat.registry import Endpoint, Registry, RegistryError, RegistryScan, default_registry_path
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
    assert stat.S_IMODE(os.stat(reg.path).st_mode) == 0o2750  # entries keep its group
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


# -- class 1: untrusted data used as a path ---------------------------------------------

def _write_entry(registry: Registry, name: str, **changes: object) -> Path:
    data = {**make_endpoint().to_dict(), "id": name.removesuffix(".json"), **changes}
    path = registry.path / name
    path.write_text(json.dumps(data))
    return path


def test_traversal_id_is_a_problem_and_prune_touches_nothing_outside(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.ensure()
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "manifest.json").write_text("{}")
    (precious / "manifest.stop").write_text("")
    _write_entry(registry, "old-pilot.json", id="../precious/manifest",
                 heartbeat_at=time.time() - 3600)
    scan = registry.scan()
    assert scan.entries == []
    assert "'id'" in scan.problems[0].reason
    assert registry.prune() == []
    assert (precious / "manifest.json").exists() and (precious / "manifest.stop").exists()
    assert (registry.path / "old-pilot.json").exists()  # a problem is reported, not deleted


@pytest.mark.parametrize("bad", ["../x", "a/b", "/etc/passwd", ".hidden", "", "a b", "x" * 200])
def test_paths_from_ids_are_refused(registry: Registry, bad: str) -> None:
    with pytest.raises(RegistryError, match="not an endpoint id"):
        registry.remove(bad)
    with pytest.raises(RegistryError):
        registry.request_stop(bad)
    with pytest.raises(RegistryError):
        registry.stop_requested(bad)


def test_id_must_match_the_file_name(registry: Registry) -> None:
    _write_entry(registry, "a.json", id="b")
    (problem,) = registry.scan().problems
    assert "does not match the file name" in problem.reason


# -- class 2: trust by owner ------------------------------------------------------------

NOBODY = 65534


def test_entry_owned_by_another_user_is_ignored(registry: Registry) -> None:
    registry.publish(make_endpoint(id="mine"))
    foreign = _write_entry(registry, "m.injected.json", model="m1")
    os.chown(foreign, NOBODY, -1)
    scan = registry.scan()
    assert [e.id for e in scan.entries] == ["mine"]
    assert "owned by user nobody" in scan.problems[0].reason
    assert registry.get("m.injected") is None
    assert [e.id for e in registry.view().entries()] == ["mine"]


def test_team_registry_trusts_its_group(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o2770)
    registry = Registry(team, shared=True)
    teammate = _write_entry(registry, "t1.json")
    os.chown(teammate, NOBODY, os.stat(team).st_gid)  # a teammate: another user, the group
    stranger = _write_entry(registry, "t2.json")
    os.chown(stranger, NOBODY, NOBODY)
    scan = registry.scan()
    assert [e.id for e in scan.entries] == ["t1"]
    assert "not the team group" in scan.problems[0].reason


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir(mode=0o755)
    os.chown(foreign, NOBODY, NOBODY)
    registry = Registry(foreign)
    for action in (registry.scan, registry.ensure, lambda: registry.publish(make_endpoint()),
                   registry.view().refresh):
        with pytest.raises(RegistryError, match="belongs to user nobody, not you") as info:
            action()
        assert "\n" not in str(info.value) and "chmod 2770" in str(info.value)
    assert os.listdir(foreign) == []


@pytest.mark.parametrize(("mode", "message"), [
    (0o777, "writable by every user"),
    (0o1777, "writable by every user"),
    (0o770, "group-writable but not a team registry"),
])
def test_directory_writable_by_others_is_refused(tmp_path: Path, mode: int,
                                                 message: str) -> None:
    path = tmp_path / "r"
    path.mkdir()
    os.chmod(path, mode)
    with pytest.raises(RegistryError, match=message):
        Registry(path).scan()
    with pytest.raises(RegistryError, match=message):
        Registry(path, shared=True).ensure()
    assert stat.S_IMODE(os.stat(path).st_mode) == mode  # refused, not "fixed"


@pytest.mark.parametrize("shared", [False, True])
def test_existing_directory_mode_is_never_changed(tmp_path: Path, shared: bool) -> None:
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o2770)
    registry = Registry(team, shared=shared)
    registry.publish(make_endpoint())
    registry.request_stop("e1")
    registry.remove("e1")
    assert stat.S_IMODE(os.stat(team).st_mode) == 0o2770
    assert stat.S_IMODE(os.stat(registry.log_dir).st_mode) == 0o2770  # created like its parent


@pytest.mark.parametrize(("url", "host", "allowed"), [
    ("http://127.0.0.1:8000/v1", "anything", True),
    ("http://localhost:8000/v1", "nid001", True),
    ("http://[::1]:8000/v1", "::1", True),
    ("http://nid001234:8000/v1", "nid001234", True),
    ("http://10.1.2.3:8000/v1", "10.1.2.3", True),
    ("http://evil.example.com:8000/v1", "evil.example.com", False),
    ("http://8.8.8.8:8000/v1", "8.8.8.8", False),
    ("http://nid001234:8000/v1", "nid009999", True),  # another node of the cluster
    ("http://user:pw@nid1:8000/v1", "nid1", False),
])
def test_url_hosts_outside_the_cluster_are_flagged(registry: Registry, url: str, host: str,
                                                   allowed: bool) -> None:
    _write_entry(registry, "h.json", url=url, host=host)
    scan = registry.scan()
    assert [e.id for e in scan.entries] == (["h"] if allowed else [])
    if not allowed:
        assert scan.problems


def test_allowed_hosts_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(tmp_path / "r")
    registry.ensure()
    _write_entry(registry, "h.json", url="http://gpu7.cluster.org:80/v1", host="gpu7.cluster.org")
    assert registry.scan().entries == []
    monkeypatch.setenv("NERSCHAT_ALLOWED_HOSTS", "gpu*.cluster.org, nid*")
    assert [e.id for e in Registry(registry.path).scan().entries] == ["h"]
    assert Registry(registry.path, allowed_hosts=["nid*"]).scan().entries == []


# -- class 3: blocking or crashing reads ------------------------------------------------

def _scan_in_thread(registry: Registry, seconds: float = 20.0) -> RegistryScan:
    """The scan, or a test failure if it hangs (instead of hanging the suite)."""
    result: list[RegistryScan] = []
    worker = threading.Thread(target=lambda: result.append(registry.scan()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, "the scan blocked"
    return result[0]


def test_fifo_device_symlink_and_huge_files_never_block(registry: Registry,
                                                        tmp_path: Path) -> None:
    registry.publish(make_endpoint(id="good"))
    os.mkfifo(registry.path / "aaa.json")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.symlink(fifo, registry.path / "bbb.json")
    os.symlink("/dev/stdin", registry.path / "ccc.json")
    os.mknod(registry.path / "ddd.json", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    with open(registry.path / "eee.json", "wb") as sparse:  # 1 GB, no blocks on disk
        sparse.truncate(1 << 30)
    scan = _scan_in_thread(registry)
    assert [e.id for e in scan.entries] == ["good"]
    reasons = {p.path.name: p.reason for p in scan.problems}
    assert "FIFO" in reasons["aaa.json"]
    assert "symbolic link" in reasons["bbb.json"] and "symbolic link" in reasons["ccc.json"]
    assert "device" in reasons["ddd.json"]
    assert "bytes, more than" in reasons["eee.json"]
    # The same files through the paths that open one entry by name.
    for endpoint_id in ("aaa", "bbb", "ddd", "eee"):
        with pytest.raises(ValueError):
            registry.read(registry.entry_path(endpoint_id))
    view_scan = registry.view().refresh()
    assert [e.id for e in view_scan.entries] == ["good"] and len(view_scan.problems) == 5


def test_future_heartbeat_is_suspect(registry: Registry) -> None:
    now = time.time()
    _write_entry(registry, "far.json", heartbeat_at=now + 600, ttl=30.0)
    _write_entry(registry, "near.json", heartbeat_at=now + 5, ttl=30.0)
    scan = registry.scan()
    assert [e.id for e in scan.entries] == ["near"]
    assert "in the future" in scan.problems[0].reason
    near = scan.entries[0]
    assert near.heartbeat_at <= time.time()  # skew within the ttl counts as "now"
    assert not near.is_stale()


BAD_FIELDS: list[tuple[str, object]] = [
    ("pid", "1"), ("pid", True), ("pid", -4), ("pid", 1.5), ("pid", None),
    ("url", 42), ("url", "ftp://h/v1"), ("url", "http://127.0.0.1:99999/v1"),
    ("url", "http://127.0.0.1:9/v2"), ("model", ["m"]), ("model", ""),
    ("model", "[bold red]m1[/]"), ("model", "m1\x1b[2J"), ("engine", None),
    ("host", {"a": 1}), ("kind", ["llm"]), ("state", 1), ("api_key", 5),
    ("api_key", "k\r\nX-Evil: 1"), ("slurm_job_id", 12), ("heartbeat_at", "now"),
    ("heartbeat_at", float("nan")), ("ttl", -1), ("ttl", 1e12), ("ttl", True),
    ("expires_at", "never"), ("started_at", None), ("ready_at", [1]), ("gpus", 0),
    ("capacity", "8"), ("capacity", 0), ("max_model_len", 1.5), ("log_path", 7),
    ("log_path", "/tmp/\x07log"), ("extra", []), ("extra", {"group": 5}), ("schema", 9),
    ("schema", True), ("id", 7), ("id", None),
    # Field attack #4 and #11: job ids SLURM would read as options, limits, API, metrics, extra.
    ("slurm_job_id", "--user=root"), ("slurm_job_id", "-1"), ("slurm_job_id", "4242;id"),
    ("slurm_job_id", "4242 4243"), ("max_batch_size", "x"), ("max_batch_size", 0),
    ("max_batch_size", 10**12), ("max_batch_tokens", 2.5), ("max_batch_tokens", -3),
    ("max_input_tokens", "512"), ("max_input_tokens", 1 << 40), ("api", "grpc"), ("api", 1),
    ("metrics_url", "file:///etc/passwd"), ("metrics_url", "http://u:p@127.0.0.1:9/metrics"),
    ("metrics_url", "http://127.0.0.1:9/metrics\x1b[2J"), ("metrics_url", 5),
    ("extra", {"k": "v\x1b]0;x\x07"}), ("extra", {"k": {"nested": 1}}), ("extra", {"k": [1]}),
    ("extra", {"../k": 1}), ("extra", {"k": float("inf")}), ("capacity", 10**9),
    ("expires_at", -1.0),
    # Load metrics: Prometheus names of the two gauges, nothing else.
    ("load_metrics", "vllm:num_requests_waiting"), ("load_metrics", ["te_queue_size"]),
    ("load_metrics", {"waiting": "queue size"}), ("load_metrics", {"waiting": "9q"}),
    ("load_metrics", {"waiting": 3}), ("load_metrics", {"waiting": "q", "evil": "x"}),
    ("load_metrics", {"running": "r"}), ("load_metrics", {}),
    ("load_metrics", {"waiting": "q\x1b[2J"}), ("load_metrics", {"waiting": "q" * 201}),
]


def _endpoint_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(Endpoint) if f.init and f.name != "observed_at"]


@pytest.mark.parametrize("name", _endpoint_fields())
@pytest.mark.parametrize("wrong", [[], {"k": []}, True, "\x1b[2J"],
                         ids=["list", "nested", "bool", "escape"])
def test_every_entry_field_is_checked(name: str, wrong: object) -> None:
    """Each field of Endpoint, a future one too, refuses values of the wrong type by name."""
    with pytest.raises(ValueError, match=f"field '{name}"):
        Endpoint.from_dict({**make_endpoint(id="bad").to_dict(), name: wrong})


def test_valid_limits_api_metrics_and_extra_are_kept(registry: Registry) -> None:
    entry = make_endpoint(api="tei", max_batch_size=32, max_batch_tokens=16384,
                          max_input_tokens=512, metrics_url="http://127.0.0.1:9/metrics",
                          slurm_job_id="4242_7", extra={"launch": "ab12", "slot": 0,
                                                        "job_output": None, "gpus": 1})
    registry.publish(entry)
    assert registry.get("e1") == entry
    for job in ("4242", "4242_7", "4242+1", "4242.batch", "4242_7.0"):
        Endpoint.from_dict({**entry.to_dict(), "slurm_job_id": job})


@pytest.mark.parametrize("names", [
    {"running": "vllm:num_requests_running", "waiting": "vllm:num_requests_waiting"},
    {"waiting": "te_queue_size"},
    None,
])
def test_valid_load_metrics_are_kept(registry: Registry, names: dict[str, str] | None) -> None:
    entry = make_endpoint(metrics_url="http://127.0.0.1:9/metrics", load_metrics=names)
    registry.publish(entry)
    assert registry.get("e1") == entry
    assert json.loads(registry.entry_path("e1").read_text())["load_metrics"] == names


def test_bad_load_metrics_make_the_entry_a_problem(registry: Registry) -> None:
    _write_entry(registry, "lm.json", load_metrics={"waiting": "q", "running": "a b"})
    scan = registry.scan()
    assert scan.entries == []
    assert "field 'load_metrics.running': 'a b' is not a Prometheus metric name" in \
        scan.problems[0].reason


def test_metrics_url_host_outside_the_cluster_is_a_problem(registry: Registry) -> None:
    _write_entry(registry, "m.json", metrics_url="http://metrics.example.com/metrics")
    scan = registry.scan()
    assert scan.entries == []
    assert "metrics_url host 'metrics.example.com' is not a cluster host" in \
        scan.problems[0].reason


def test_entry_past_its_walltime_is_not_ready(registry: Registry) -> None:
    now = time.time()
    registry.publish(make_endpoint(id="over", expires_at=now - 1))
    registry.publish(make_endpoint(id="left", expires_at=now + 600))
    assert [e.id for e in registry.endpoints()] == ["left"]
    over = registry.get("over")
    assert over is not None and over.status() == "expired" and not over.is_usable()


@pytest.mark.parametrize(("name", "value"), BAD_FIELDS)
def test_wrong_field_types_are_reported(registry: Registry, name: str, value: object) -> None:
    _write_entry(registry, "bad.json", **{name: value})
    scan = registry.scan()
    assert scan.entries == []
    (problem,) = scan.problems
    assert "\x1b" not in problem.reason and "\n" not in problem.reason
    with pytest.raises(ValueError):
        Endpoint.from_dict({**make_endpoint(id="bad").to_dict(), name: value})


@pytest.mark.parametrize("junk", [b"\xff\xfe", b"[" * 100000, b"null", b'"x"', b"1e999",
                                  b'{"schema": 1}'])
def test_junk_content_is_a_problem(registry: Registry, junk: bytes) -> None:
    (registry.path / "junk.json").write_bytes(junk)
    assert _scan_in_thread(registry).problems


def test_publish_refuses_invalid_entries(registry: Registry) -> None:
    with pytest.raises(ValueError, match="'id'"):
        registry.publish(make_endpoint(id="../x"))
    with pytest.raises(ValueError, match="'model'"):
        registry.publish(make_endpoint(model="\x1b[31mred"))


# -- class 4: secrets in reprs ----------------------------------------------------------

def test_key_is_not_in_reprs_or_logs(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    entry = make_endpoint(api_key="sk-live-123456")
    registry.publish(entry)
    (read,) = registry.endpoints()
    for text in (repr(entry), str(entry), repr(read), repr([read]), repr(registry.scan()),
                 repr(registry.view().refresh()), json.dumps(read.public_dict())):
        assert "sk-live-123456" not in text
    assert read.api_key == "sk-live-123456"  # still there for the client that needs it
    caplog.set_level(logging.DEBUG)
    registry.heartbeat(read)
    assert "sk-live-123456" not in caplog.text


# -- issue 10: one way to build a Registry, `shared` survives pickling (Parsl) ----------

def test_registry_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_REGISTRY", str(tmp_path / "env"))
    assert Registry.of().path == tmp_path / "env"
    assert Registry.of("").path == tmp_path / "env"
    assert Registry.of(None, shared=True).shared
    reg = Registry(tmp_path / "a", shared=True)
    assert Registry.of(reg) is reg
    assert Registry.of(reg, shared=True) is reg
    private = Registry.of(reg, shared=False)
    assert private.path == reg.path and not private.shared
    assert Registry.of(str(tmp_path / "b")).path == tmp_path / "b"
    assert Registry.of(tmp_path / "c", shared=True).shared


def test_shared_flag_survives_pickling(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "r", shared=True, allowed_hosts="nid*")
    reg.view().refresh()  # a view (with its lock) does not travel
    copy = pickle.loads(pickle.dumps(reg))
    assert (copy.path, copy.shared, copy.allowed_hosts) == (reg.path, True, ("nid*",))
    assert copy.view().refresh().entries == []


def test_pilot_group_passes_path_and_shared(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from nerschat.parsl import apps
    from nerschat.parsl.pilots import PilotGroup

    calls: list[tuple[object, ...]] = []
    monkeypatch.setattr(apps, "pilot_app", lambda executor: lambda *args: calls.append(args))
    group = PilotGroup("stub", "m1", count=2, registry=Registry(tmp_path / "r", shared=True))
    group.start()
    assert len(calls) == 2
    _, path, shared = calls[0]
    rebuilt = Registry.of(pickle.loads(pickle.dumps(path)), shared=pickle.loads(
        pickle.dumps(shared)))
    assert rebuilt.path == tmp_path / "r" and rebuilt.shared is True


def test_pending_entry_of_a_queued_job_is_valid(registry: Registry) -> None:
    """`nerschat launch` writes one before its job starts: no URL, no pid, a long ttl."""
    registry.publish(make_endpoint(id="m.abc123.0-0", state="pending", url="", pid=0,
                                   api_key=None, slurm_job_id="42", ttl=14 * 24 * 3600.0))
    (entry,) = registry.scan().entries
    assert entry.state == "pending" and not entry.is_usable()
    _write_entry(registry, "p2.json", state="ready", url="", pid=0)
    assert [e.id for e in registry.scan().entries] == ["m.abc123.0-0"]  # only pending may
