"""A launched job's body, written where the job reads it and run only if unchanged.

`nerschat launch` writes each job's body (`nerschat/templates/pilot-job.sh` rendered) to
`REGISTRY/jobs/ID.sh` and submits a job script that runs it when the job starts, maybe hours
later. In a team registry the registry directory is group-writable: a teammate could rename
`jobs/` and put another script under the same name, which the job would then run as its
owner. So the submitted job script (which SLURM copies at submission) carries the body's
SHA-256, and the job runs the body through `nerschat job-body --sha256 HEX PATH`: the file is
read once (no link followed, a regular file only), compared with the digest, and what was
compared is what runs (`bash -c BODY`). Anything else ends the job with a one-line reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shlex
import stat
from pathlib import Path

from nerschat.errors import FailureError, UsageError

MAX_BODY_BYTES = 1 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class JobBodyError(FailureError):
    """A job body that is missing, not a plain file, or not the one that was submitted."""


def digest(body: str) -> str:
    """The SHA-256 (hex) of a body as written (UTF-8)."""
    return hashlib.sha256(body.encode()).hexdigest()


def run_command(body_path: Path, body: str) -> str:
    """The shell line the submitted job script runs: verify the body, then run it.

    No `$` or quotes beyond `shlex.quote` of the path, so every Parsl launcher (some copy the
    command into an unquoted here-document) passes it through unchanged.
    """
    return f"nerschat job-body --sha256 {digest(body)} {shlex.quote(str(body_path))}"


def write_body(jobs_dir: Path, name: str, body: str, mode: int) -> Path:
    """Write `jobs_dir/name` afresh (never through a link, never into someone else's directory).

    `jobs_dir` must be a directory of this user (not a link); an existing file of that name
    is replaced, not written through. UsageError (one line) if the directory is not ours.
    """
    st = os.lstat(jobs_dir)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        what = "not a directory" if not stat.S_ISDIR(st.st_mode) else f"owned by uid {st.st_uid}"
        raise UsageError(f"{jobs_dir} is {what}, not your own directory: job scripts are "
                         f"written only into a directory of yours (launch with your own "
                         f"--registry, or have it removed)")
    path = jobs_dir / name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), mode)
        handle.write(body.encode())
        handle.flush()
        os.fsync(handle.fileno())
    return path


def read_verified(path: Path, sha256: str) -> str:
    """The body at `path` if its SHA-256 is `sha256`; JobBodyError (one line) otherwise."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        what = "a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise JobBodyError(f"job body {path}: {what}; not run") from None
    with os.fdopen(fd, "rb") as handle:
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise JobBodyError(f"job body {path} is not a regular file; not run")
        data = handle.read(MAX_BODY_BYTES + 1)
    if len(data) > MAX_BODY_BYTES or hashlib.sha256(data).hexdigest() != sha256.lower():
        raise JobBodyError(f"job body {path} is not the one submitted (changed or replaced "
                           f"since; owner uid {st.st_uid}); not run")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise JobBodyError(f"job body {path} is not UTF-8 text; not run") from None


def exec_verified(path: Path, sha256: str) -> None:
    """Replace this process by `bash -c BODY` once the body is verified (see module doc)."""
    body = read_verified(path, sha256)
    os.execvp("bash", ["bash", "-c", body, str(path)])
