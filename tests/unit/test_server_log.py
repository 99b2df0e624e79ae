"""Reading a pilot's server log: only `DIR/logs/ID.log`, only a trusted regular file, and
every line printable (no terminal escapes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nerschat.registry import Registry, RegistryError
from nerschat.server_log import LogError, follow, last_line, open_log, printable, tail_lines


def write_log(registry: Registry, endpoint_id: str, text: bytes) -> Path:
    path = registry.log_dir / f"{endpoint_id}.log"
    path.write_bytes(text)
    path.chmod(0o600)
    return path


def test_printable_escapes_control_characters_and_keeps_the_last_redraw() -> None:
    assert printable("\x1b]0;pwned\x07\x1b[2Jhello\n") == "\\x1b]0;pwned\\x07\\x1b[2Jhello"
    assert printable("Loading  10%\rLoading  50%\rLoading 100%") == "Loading 100%"
    assert printable("a\u202eb\tc") == "a\\u202eb\tc"  # a bidi override cannot reorder text


def test_tail_and_last_line(registry: Registry) -> None:
    write_log(registry, "p1", b"one\ntwo\n\x1b[31mthree\x1b[0m\n\n")
    with open_log(registry, "p1") as handle:
        assert tail_lines(handle, 2) == ["\\x1b[31mthree\\x1b[0m", ""]
    assert last_line(registry, "p1") == "\\x1b[31mthree\\x1b[0m"
    assert last_line(registry, "nope") is None


def test_a_link_is_never_followed(registry: Registry, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("private\n")
    (registry.log_dir / "p1.log").symlink_to(secret)
    with pytest.raises(LogError, match="not a regular file"):
        open_log(registry, "p1")
    assert last_line(registry, "p1") is None


def test_a_fifo_does_not_block(registry: Registry) -> None:
    os.mkfifo(registry.log_dir / "p1.log")
    with pytest.raises(LogError, match="not a regular file"):
        open_log(registry, "p1")


def test_a_path_outside_the_logs_directory_cannot_be_named(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="not an endpoint id"):
        open_log(registry, "../../etc/passwd")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to give a file to another user")
def test_a_log_owned_by_someone_else_is_refused(registry: Registry) -> None:
    path = write_log(registry, "p1", b"planted\n")
    os.chown(path, 65534, 65534)
    with pytest.raises(LogError, match="owned by"):
        open_log(registry, "p1")


def test_follow_prints_new_lines_until_told_to_stop(registry: Registry) -> None:
    path = write_log(registry, "p1", b"old\n")
    polls = iter([True, True, False])

    def keep_going() -> object:
        for answer in polls:
            with open(path, "ab") as log:
                log.write(b"new \x1b[2J line\npartial")
            yield answer

    with open_log(registry, "p1") as handle:
        handle.seek(0, os.SEEK_END)
        lines = list(follow(handle, keep_going()))  # type: ignore[arg-type]
    assert lines == ["new \\x1b[2J line", "partialnew \\x1b[2J line",
                     "partialnew \\x1b[2J line", "partial"]
