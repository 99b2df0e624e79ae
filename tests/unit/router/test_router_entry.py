"""The router's registry entry, its key, and what clients and commands make of it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nerschat.client.routing import EndpointPool
from nerschat.errors import UsageError
from nerschat.registry import Endpoint, Registry
from nerschat.router.entry import (
    key_location,
    live_routers,
    new_entry,
    router_key,
)
from tests.conftest import make_endpoint


def test_generated_key_is_kept_only_in_the_private_entry(registry: Registry) -> None:
    key = router_key(None)
    assert len(key.value) >= 32 and key.value not in repr(key)
    entry = new_entry("nid001", 8123, key, ttl=30)
    registry.publish(entry)
    assert stat.S_IMODE(os.stat(registry.entry_path(entry.id)).st_mode) == 0o600
    back = registry.get(entry.id)
    assert back is not None and back.kind == "router" and back.api_key == key.value
    assert back.url == "http://nid001:8123/v1"
    assert key.value not in key_location(registry, back)
    assert str(registry.entry_path(entry.id)) in key_location(registry, back)


def test_key_from_the_environment_is_not_written(registry: Registry,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_ROUTER_KEY", "s3cret-value")
    key = router_key("MY_ROUTER_KEY")
    entry = new_entry("h", 1, key, ttl=30)
    registry.publish(entry)
    assert "s3cret-value" not in registry.entry_path(entry.id).read_text()
    assert key_location(registry, entry) == "$MY_ROUTER_KEY in the router's environment"


def test_unset_key_variable_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(UsageError, match="NO_SUCH_KEY_VAR"):
        router_key("NO_SUCH_KEY_VAR")


@pytest.mark.parametrize("value", ["clé", "two words", "tab\there", "nul\x00", "k\udcff",
                                   "x" * 5000])
def test_a_key_clients_cannot_send_is_refused_at_start(monkeypatch: pytest.MonkeyPatch,
                                                       value: str) -> None:
    """Field attack: a non-ASCII key started a router no HTTP client could authenticate to."""
    monkeypatch.setattr(os, "environ", {**os.environ, "ODD_KEY": value})
    with pytest.raises(UsageError, match="--api-key-env ODD_KEY: ") as info:
        router_key("ODD_KEY")
    assert "\n" not in str(info.value) and value not in str(info.value)


def test_router_with_an_odd_key_exits_2_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "ODD_KEY": "clé"}
    result = subprocess.run([sys.executable, "-m", "nerschat.cli.main", "router",
                             "--api-key-env", "ODD_KEY", "--registry", str(tmp_path / "r")],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: --api-key-env ODD_KEY: character 3 of the key is "
                                    "not printable ASCII")
    assert result.stderr.count("\n") == 1 and "clé" not in result.stderr


def test_model_traffic_never_goes_to_a_router(registry: Registry) -> None:
    router = new_entry("h", 1, router_key(None), ttl=30)
    registry.publish(router)
    registry.publish(make_endpoint(id="llm1"))
    assert Endpoint.from_dict(router.to_dict()) == router
    assert not router.is_usable()
    assert [e.id for e in registry.endpoints()] == ["llm1"]
    pool = EndpointPool(registry)
    pool.refresh(force=True)
    assert [load.id for load in pool.loads()] == ["llm1"]
    assert pool.acquire(None).id == "llm1"  # a body without a model still finds a server


def test_live_routers_skip_stale_ones(registry: Registry) -> None:
    fresh = new_entry("a", 1, router_key(None), ttl=30)
    stale = new_entry("b", 2, router_key(None), ttl=30)
    stale.heartbeat_at = time.time() - 100
    for entry in (fresh, stale):
        registry.publish(entry)
    assert [e.id for e in live_routers(registry)] == [fresh.id]


def nerschat(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nerschat.cli.main", *args],
                          capture_output=True, text=True, timeout=60)


def test_wait_router_prints_url_and_key_location(registry: Registry) -> None:
    out = nerschat("wait", "--router", "--timeout", "0", "--registry", str(registry.path))
    assert out.returncode == 1 and "no router" in out.stderr
    entry = new_entry("nid002", 9000, router_key(None), ttl=30)
    registry.publish(entry)
    registry.publish(make_endpoint(id="llm1"))
    out = nerschat("wait", "--router", "--timeout", "5", "--registry", str(registry.path))
    assert out.returncode == 0, out.stderr
    assert out.stdout == "http://nid002:9000/v1\n"
    assert str(registry.entry_path(entry.id)) in out.stderr
    assert entry.api_key is not None and entry.api_key not in out.stdout + out.stderr
    listing = nerschat("ls", "--registry", str(registry.path))
    assert listing.returncode == 0 and "router" in listing.stdout and "llm1" in listing.stdout
    assert entry.api_key not in nerschat("ls", "--json", "--registry", str(registry.path)).stdout
