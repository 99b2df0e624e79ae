r"""A pilot's server log, read safely: `DIR/logs/ID.log` of the registry, nothing else.

The pilot writes its server's output to `Registry.log_dir / f"{id}.log"`. Readers never take
a path from a registry entry (its `log_path` is what the pilot saw, and an entry is written
by others): the path is rebuilt from the registry directory and a checked id, opened without
following links or blocking on a FIFO, and read only if it is a regular file whose owner the
registry trusts (you, the registry's owner, or the team group of a team registry). Every line
handed out is printable text: control characters (terminal escapes) are shown as `\xNN`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from nerschat.errors import FailureError, NerschatError
from nerschat.registry import Registry, check_id

TAIL_BYTES = 64 * 1024
"""At most this much of a log's end is read for its last lines."""


class LogError(FailureError):
    """A log that cannot be shown: not there yet, not a regular file, or not trusted."""


def log_path(registry: Registry, endpoint_id: str) -> Path:
    """`DIR/logs/ID.log`; RegistryError if `endpoint_id` is not a plain name."""
    return registry.log_dir / f"{check_id(endpoint_id)}.log"


def printable(line: str) -> str:
    r"""One log line as a terminal would leave it, safe to print.

    Text before the last carriage return is dropped (progress bars redraw the line), and
    every other non-printable character is shown escaped (`\x1b`), so a log cannot drive the
    terminal.
    """
    line = line.rstrip("\r\n").rsplit("\r", 1)[-1]
    return "".join(ch if ch.isprintable() or ch == "\t" else repr(ch)[1:-1] for ch in line)


def open_log(registry: Registry, endpoint_id: str) -> BinaryIO:
    """Open a pilot's server log for reading (binary), checked as the module says.

    Raises
    ------
    FileNotFoundError
        no log yet (the pilot has not started its server, or the registry has no `logs/`).
    LogError
        a link, FIFO or other non-regular file, or a file the registry does not trust.
    RegistryError
        a bad id or an unsafe registry directory.
    """
    path = log_path(registry, endpoint_id)
    checked = registry.check()
    if checked is None:
        raise FileNotFoundError(2, "no registry directory", str(registry.path))
    trust = checked[1]
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        dir_fd = os.open(registry.log_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise LogError(f"{registry.log_dir} is not a plain directory ({exc.strerror}): "
                       "not reading logs from it") from None
    try:
        try:
            fd = os.open(path.name, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            raise
        except OSError as exc:  # ELOOP: a symbolic link
            raise LogError(f"{path} is not a regular file ({exc.strerror}): not reading it"
                           ) from None
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LogError(f"{path} is not a regular file: not reading it")
        problem = trust.entry_problem(st)
        if problem is not None:
            raise LogError(f"{path}: {problem}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def tail_lines(handle: BinaryIO, lines: int) -> list[str]:
    """The last `lines` lines of an open log (at most `TAIL_BYTES` read), printable."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - TAIL_BYTES))
    data = handle.read(TAIL_BYTES)
    text = data.decode(errors="replace").splitlines()
    if size > TAIL_BYTES and text:
        text = text[1:]  # the first line read is cut
    return [printable(line) for line in text[-lines:]] if lines > 0 else []


def last_line(registry: Registry, endpoint_id: str) -> str | None:
    """The last non-empty line of a pilot's server log, printable; None if there is none.

    Never raises: a log that is missing or not trusted gives None.
    """
    with contextlib.suppress(OSError, NerschatError, ValueError):
        with open_log(registry, endpoint_id) as handle:
            for line in reversed(tail_lines(handle, 50)):
                if line.strip():
                    return line.strip()
    return None


def follow(handle: BinaryIO, keep_going: Iterator[bool]) -> Iterator[str]:
    """New lines of an open log as they are written, printable.

    Between polls, `next(keep_going)` decides whether to go on (it may sleep); when it says
    False the rest of the file is read and the iteration ends. A log that shrinks (rewritten)
    is read again from its start.
    """
    pending = b""
    while True:
        chunk = handle.read(TAIL_BYTES)
        if chunk:
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield printable(line.decode(errors="replace"))
            continue
        position = handle.tell()
        with contextlib.suppress(OSError):
            if os.fstat(handle.fileno()).st_size < position:
                handle.seek(0)
                pending = b""
                continue
        if not next(keep_going, False):
            rest = handle.read()
            for line in (pending + rest).split(b"\n"):
                if line:
                    yield printable(line.decode(errors="replace"))
            return
