"""All of nerschat's exceptions derive from one root, in two branches the CLI maps to exit codes.

- `UsageError` (exit 2): the caller asked for something that cannot be done as asked — a bad
  flag, a malformed input line, a refused registry directory. Fix the request and rerun.
- `FailureError` (exit 1): the request was fine but the world was not — no server became
  ready, a pilot died, a disk filled up. Retrying later may help.

Each error's `str()` is one line a user can act on: what, where (file:line, endpoint id,
job id) and what to do.
"""

from __future__ import annotations


class NerschatError(Exception):
    """Root of every error nerschat raises on purpose; `exit_code` is what the CLI returns."""

    exit_code: int = 1


class UsageError(NerschatError):
    """A request that cannot be carried out as asked (exit status 2)."""

    exit_code = 2


class FailureError(NerschatError):
    """A well-formed request that failed at run time (exit status 1)."""

    exit_code = 1
