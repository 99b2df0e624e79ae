"""`nerschat tunnel`: the ssh command and key instructions for a laptop."""

from __future__ import annotations

import shlex

from nerschat.cli.tunnel import instructions, key_command, ssh_argv
from nerschat.registry import Registry
from nerschat.router.entry import new_entry, router_key


def test_ssh_forward_and_key_instructions(registry: Registry) -> None:
    entry = new_entry("nid004242", 8123, router_key(None), ttl=30)
    registry.publish(entry)
    argv = ssh_argv(entry, "perlmutter.nersc.gov", "alice", 9000)
    assert argv[-3:] == ["-L", "9000:nid004242:8123", "alice@perlmutter.nersc.gov"]
    assert "-N" in argv
    text = instructions(registry, entry, "perlmutter.nersc.gov", "alice", 9000)
    assert entry.api_key is not None and entry.api_key not in text
    assert "http://localhost:9000/v1" in text and shlex.join(argv) in text
    command = key_command(registry, entry, "perlmutter.nersc.gov", "alice")
    # The key is read on the login node and parsed on the laptop: check the shell parses it.
    words = shlex.split(command)
    assert words[:3] == ["ssh", "alice@perlmutter.nersc.gov", "cat"]
    assert words[3] == str(registry.entry_path(entry.id))


def test_key_from_environment_is_named_not_fetched(registry: Registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ROUTER_KEY", "xyz")
    entry = new_entry("h", 1, router_key("ROUTER_KEY"), ttl=30)
    text = instructions(registry, entry, "login", "bob", 8000)
    assert "$ROUTER_KEY" in text and "xyz" not in text
