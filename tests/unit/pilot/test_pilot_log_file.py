"""The server log is opened without following links, blocking or appending to another file
(field attack #14: a symlink at `logs/ID.log` made the pilot append to its target)."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from nerschat.pilot.pilot import PilotError, open_server_log, tail


def write(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_a_new_log_is_created_private_and_an_own_log_appended(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    write(open_server_log(log, 0o600), "one\n")
    write(open_server_log(log, 0o600), "two\n")
    assert log.read_text() == "one\ntwo\n"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def test_a_symbolic_link_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    log = tmp_path / "p.log"
    log.symlink_to(victim)
    write(open_server_log(log, 0o600), "server\n")
    assert victim.read_text() == "precious\n"
    assert not log.is_symlink() and log.read_text() == "server\n"
    assert tail(log) == "server"


def test_a_dangling_link_creates_nothing_at_its_target(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    log = tmp_path / "p.log"
    log.symlink_to(target)
    write(open_server_log(log, 0o600), "server\n")
    assert not target.exists() and log.read_text() == "server\n"


def test_a_hard_link_to_another_file_is_replaced(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    log = tmp_path / "p.log"
    os.link(victim, log)
    write(open_server_log(log, 0o600), "server\n")
    assert victim.read_text() == "precious\n" and log.read_text() == "server\n"


def test_a_fifo_is_replaced_without_blocking(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    os.mkfifo(log)
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(open_server_log(log, 0o600)),
                              daemon=True)
    worker.start()
    worker.join(10)
    assert done, "opening a FIFO as the log blocked"
    write(done[0], "server\n")
    assert stat.S_ISREG(log.stat().st_mode) and log.read_text() == "server\n"


def test_a_directory_is_a_one_line_error(tmp_path: Path) -> None:
    log = tmp_path / "p.log"
    log.mkdir()
    with pytest.raises(PilotError, match=r"server log .*p\.log is .*: remove it, or use "
                                         r"another --id") as info:
        open_server_log(log, 0o600)
    assert "\n" not in str(info.value)


def test_tail_never_reads_through_a_link(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("do not print\n")
    log = tmp_path / "p.log"
    log.symlink_to(secret)
    assert tail(log) == ""
