"""`nerschat job-body`: what a launched job runs at its start (not for people; hidden)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from nerschat.parsl.jobscript import exec_verified


def _sha256(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise click.BadParameter("not a SHA-256 digest (64 hex digits)")
    return value


@click.command(hidden=True)
@click.option("--sha256", required=True, callback=_sha256, help="Digest of the body submitted.")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def job_body(sha256: str, path: Path) -> None:
    """Run a job body written by `nerschat launch` if it is still the one submitted."""
    exec_verified(path, sha256)
