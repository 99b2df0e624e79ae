"""API keys read from an environment variable named on the command line (`--api-key-env VAR`).

Naming the variable rather than passing the key keeps the secret off command lines (visible
in `ps` and in SLURM's job records).
"""

from __future__ import annotations

import os

from nerschat.errors import UsageError


def key_from_env(env_var: str) -> str:
    """The value of `env_var`; UsageError (exit 2) if it is unset or empty."""
    value = os.environ.get(env_var, "")
    if not value:
        raise UsageError(f"--api-key-env {env_var}: the variable is not set or empty; "
                         f"export it or leave the option out to generate a key")
    return value
