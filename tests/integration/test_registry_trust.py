"""A planted entry, a team directory and live keys, with real pilots (stub engine)."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import nerschat
from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet
from tests.conftest import make_endpoint


@pytest.fixture
def evil_server() -> Iterator[tuple[int, list[bytes]]]:
    """An OpenAI look-alike that records every request body it receives."""
    received: list[bytes] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def test_entry_planted_by_another_user_gets_no_prompts(
        registry: Registry, evil_server: tuple[int, list[bytes]]) -> None:
    port, received = evil_server
    entry = make_endpoint(id="m.injected", model="m", url=f"http://127.0.0.1:{port}/v1",
                          api_key=None, ttl=3600.0)
    path = registry.path / "m.injected.json"
    path.write_text(json.dumps(entry.to_dict()))
    os.chown(path, 65534, -1)
    with pytest.raises(nerschat.EndpointTimeout):
        client = nerschat.connect("m", registry=registry.path, timeout=1)
        client.chat.completions.create(model="m", max_tokens=2,
                                       messages=[{"role": "user", "content": "confidential"}])
    assert received == []
    assert nerschat.endpoints("m", registry=registry.path) == []


def test_serve_shared_keeps_a_team_directory(tmp_path: Path) -> None:
    team = tmp_path / "team"
    team.mkdir()
    os.chmod(team, 0o2770)
    registry = Registry(team, shared=True)
    fleet = StubFleet(registry)
    try:
        pilot = fleet.start("m", extra=("--shared",))
        entry = fleet.wait_ready(pilot)
        assert stat.S_IMODE(os.stat(team).st_mode) == 0o2770
        info = os.stat(registry.entry_path(entry.id))
        assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_gid == os.stat(team).st_gid
    finally:
        fleet.stop_all()
    assert stat.S_IMODE(os.stat(team).st_mode) == 0o2770


def test_live_key_not_in_endpoint_reprs(fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(1, "m")
    (endpoint,) = nerschat.endpoints("m", registry=registry.path)
    assert endpoint.api_key
    client = nerschat.connect("m", registry=registry.path, timeout=10)
    client.chat.completions.create(model="m", max_tokens=1,
                                   messages=[{"role": "user", "content": "x"}])
    pool_endpoints = [load.endpoint for load in client.nerschat_pool.loads()]  # type: ignore[attr-defined]
    for text in (repr(endpoint), repr(pool_endpoints), repr(registry.view().refresh())):
        assert endpoint.api_key not in text


def test_heartbeats_keep_the_directory_unchanged(fleet: StubFleet, registry: Registry) -> None:
    pilot = fleet.start("m", ttl=1.5)  # a heartbeat every 0.5 s
    entry = fleet.wait_ready(pilot)
    time.sleep(0.5)
    before = os.stat(registry.path).st_mtime_ns, os.stat(registry.entry_path(entry.id)).st_ino
    beat = os.stat(registry.entry_path(entry.id)).st_mtime
    time.sleep(2.0)
    after = os.stat(registry.path).st_mtime_ns, os.stat(registry.entry_path(entry.id)).st_ino
    assert after == before
    assert os.stat(registry.entry_path(entry.id)).st_mtime > beat
    (seen,) = registry.endpoints("m")
    assert seen.is_usable()
