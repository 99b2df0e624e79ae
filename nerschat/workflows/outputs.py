"""Guarding a run's output: never the input, never a foreign file, one run at a time.

* `same_file(a, b)`: the same file (st_dev and st_ino), so symlinks and hard links count.
* `check_file_output(input, output, ...)`: a JSONL output that is the input, or a symbolic
  link, is refused (UsageError, exit 2). A symlinked output is refused rather than written
  through: the atomic rename would replace the link by a regular file, and following it
  silently could write somewhere the user did not mean.
* `check_dir_output(input, outdir, ours)`: an output directory that is or contains the input,
  or holds files whose names nerschat does not write, is refused. A symlinked directory is
  written through (its files are written inside it; the link itself is never replaced).
* `output_lock(workdir)`: an exclusive `fcntl.flock` on `WORKDIR/lock` for the whole run; a
  second run on the same output fails at once (`OutputBusy`, naming the holder's pid and
  host).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from nerschat.errors import FailureError, UsageError

LOCK_NAME = "lock"


class OutputRefused(UsageError, ValueError):
    """The output cannot be used: it is the input, a symlink, or holds foreign files."""


class OutputBusy(FailureError, RuntimeError):
    """Another run holds the output's lock."""


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether `a` and `b` are the same existing file (through symlinks and hard links)."""
    try:
        first, second = os.stat(a), os.stat(b)
    except (OSError, ValueError):
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


def _inside(path: Path, directory: Path) -> bool:
    """Whether existing `path` lies (through symlinks) inside existing `directory`."""
    try:
        target = path.resolve(strict=True)
        top = directory.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return top == target or top in target.parents


def check_file_output(input_path: Path, output: Path, also: list[Path]) -> None:
    """Refuse a file output (and its side files `also`) that is the input, or a symlink."""
    if os.path.islink(output):
        raise OutputRefused(f"{output}: the output is a symbolic link; give the file it points "
                            f"to ({os.path.realpath(output)}) or another path")
    for path in [output, *also]:
        if same_file(path, input_path):
            raise OutputRefused(f"{path}: is the input {input_path}; write to another file")
    for path in also:
        if path.is_dir() and _inside(input_path, path):
            raise OutputRefused(f"{path}: holds the input {input_path}; write to another file")


def check_dir_output(input_path: Path, outdir: Path, ours: Callable[[str], bool]) -> None:
    """Refuse an output directory that is (or holds) the input, or holds files not ours."""
    if not outdir.exists() and not outdir.is_symlink():
        return
    if not outdir.is_dir():
        raise OutputRefused(f"{outdir}: not a directory; give a new or empty directory")
    if _inside(input_path, outdir):
        raise OutputRefused(f"{outdir}: holds the input {input_path}; write to another "
                            "directory")
    try:
        names = sorted(os.listdir(outdir))
    except OSError as exc:
        raise OutputRefused(f"{outdir}: cannot list ({exc.strerror})") from None
    foreign = [name for name in names if not ours(name)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputRefused(f"{outdir}: holds files nerschat did not write ({shown}); give a "
                            "new or empty directory")


def clear_workdir(workdir: Path) -> None:
    """Remove everything in `workdir` but its lock file (held by this run)."""
    import shutil

    if not workdir.is_dir() or workdir.is_symlink():
        with contextlib.suppress(OSError):
            workdir.unlink()
        return
    for entry in workdir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


@contextlib.contextmanager
def output_lock(workdir: Path, output: Path) -> Iterator[None]:
    """Hold an exclusive lock on `workdir/lock` (created 0600) while `output` is written.

    Raises OutputBusy (one line: the other run's pid and host) if another run holds it.
    A run that made `workdir` (and its missing parents) and left nothing in it but the lock
    (refused before any work: bad input, no items) removes what it made and left empty.
    """
    made = list(itertools.takewhile(lambda d: not os.path.lexists(d),
                                    (workdir, *workdir.parents)))  # stops at one that exists
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        fd = os.open(workdir / LOCK_NAME,
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:
        raise OutputRefused(f"{workdir / LOCK_NAME}: cannot open the output's lock "
                            f"({exc.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            raise OutputBusy(f"{output}: another run ({holder}) is writing this "
                             "output; wait for it to end or write elsewhere") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        if made:
            with contextlib.suppress(OSError):
                if os.listdir(workdir) == [LOCK_NAME]:
                    os.unlink(workdir / LOCK_NAME)  # still held: no other run can take it
                    for directory in made:  # innermost first; stops at one not empty
                        os.rmdir(directory)
        os.close(fd)
