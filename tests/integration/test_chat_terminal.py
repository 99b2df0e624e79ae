"""`nerschat chat` in a real terminal (tmux), against a stub pilot."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None,
                                reason="tmux missing (scripts/test.sh installs it)")


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True).stdout


def screen_shows(session: str, text: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = tmux("capture-pane", "-p", "-t", session)
        if text in screen:
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared; screen:\n{screen}")


def test_chat_in_tmux(fleet: StubFleet, registry: Registry) -> None:
    fleet.start_ready(1, "m1", chunk_delay=0.01)
    fleet.start_ready(1, "m2")
    session = f"nerschat-{uuid.uuid4().hex[:8]}"
    command = (f"{sys.executable} -m nerschat.cli.main chat --model m1 --registry "
               f"{registry.path} --system 'Be brief.'")
    tmux("new-session", "-d", "-s", session, "-x", "160", "-y", "40", command)
    try:
        screen_shows(session, "nerschat chat with m1")
        tmux("send-keys", "-t", session, "hello there", "Enter")
        screen_shows(session, "m1> stub-m1 answer 0:")
        # The stub echoes the prompt's tail: history (system + first turn) is sent along.
        tmux("send-keys", "-t", session, "second question", "Enter")
        screen_shows(session, "hello there second question")
        tmux("send-keys", "-t", session, "/reset", "Enter")
        screen_shows(session, "history cleared")
        tmux("send-keys", "-t", session, "/model m2", "Enter")
        screen_shows(session, "now talking to m2")
        tmux("send-keys", "-t", session, "third", "Enter")
        screen_shows(session, "m2> stub-m2 answer 0:")
        tmux("send-keys", "-t", session, "/quit", "Enter")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["tmux", "has-session", "-t", session],
                              capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("chat did not exit on /quit")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
