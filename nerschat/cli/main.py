"""The `nerschat` command."""

from __future__ import annotations

import click

from nerschat import __version__
from nerschat.cli.endpoints import ls, stop, wait
from nerschat.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nerschat")
def cli() -> None:
    """LLM and embedding servers in SLURM jobs, found through a shared registry."""


for command in (serve, ls, wait, stop):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="nerschat")


if __name__ == "__main__":
    main()
