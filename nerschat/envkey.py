"""API keys read from an environment variable named on the command line (`--api-key-env VAR`).

Naming the variable rather than passing the key keeps the secret off command lines (visible
in `ps` and in SLURM's job records).
"""

from __future__ import annotations

import os

from nerschat.errors import UsageError

MAX_KEY_CHARS = 4096


def key_problem(value: str) -> str | None:
    """Why `value` cannot be an API key, or None.

    Keys travel in an HTTP `Authorization` header and registry entries: printable ASCII
    without spaces, at most `MAX_KEY_CHARS` characters. The key itself is never in the reason.
    """
    if not value:
        return "the variable is not set or empty"
    if len(value) > MAX_KEY_CHARS:
        return f"the key is longer than {MAX_KEY_CHARS} characters"
    for position, ch in enumerate(value, 1):
        if not " " < ch < "\x7f":
            return (f"character {position} of the key is not printable ASCII (letters, digits "
                    "and punctuation only: HTTP clients cannot send anything else)")
    return None


def key_from_env(env_var: str) -> str:
    """The value of `env_var`; UsageError (exit 2, one line) if it is not a usable key."""
    value = os.environ.get(env_var, "")
    problem = key_problem(value)
    if problem:
        fix = ("export it or leave the option out to generate a key" if not value else
               "set a key of printable ASCII, or leave the option out to generate one")
        raise UsageError(f"--api-key-env {env_var}: {problem}; {fix}")
    return value
