"""The one way workflow files are written: whole, durable, or not at all.

`atomic_write(path)` opens a temporary file next to `path`; on a clean exit it is flushed,
fsynced and renamed over `path` (and the directory entry synced), so a reader sees either the
old file or the complete new one, also after a crash. On an exception the temporary file is
removed and `path` is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Literal, overload

from nerschat.errors import FailureError


class OutputError(FailureError, OSError):
    """An output file cannot be written (permissions, full disk, read-only directory)."""


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@overload
def atomic_write(path: str | os.PathLike[str], mode: Literal["w"] = "w"
                 ) -> contextlib.AbstractContextManager[IO[str]]: ...
@overload
def atomic_write(path: str | os.PathLike[str], mode: Literal["wb"]
                 ) -> contextlib.AbstractContextManager[IO[bytes]]: ...
def atomic_write(path: str | os.PathLike[str], mode: str = "w"
                 ) -> contextlib.AbstractContextManager[IO[Any]]:
    """Context manager yielding a handle whose content replaces `path` atomically on exit.

    Raises OutputError (one line, with the path) if the directory cannot be written.
    """
    return _atomic(Path(path), mode)


@contextlib.contextmanager
def _atomic(path: Path, mode: str) -> Iterator[IO[Any]]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        if "b" in mode:
            handle: IO[Any] = os.fdopen(fd, mode)
        else:
            handle = os.fdopen(fd, mode, encoding="utf-8")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_dir(path.parent)


def write_json(path: str | os.PathLike[str], value: Any, indent: int | None = 1) -> None:
    """`value` as JSON at `path`, atomically."""
    with atomic_write(path) as handle:
        handle.write(json.dumps(value, indent=indent, ensure_ascii=False))
