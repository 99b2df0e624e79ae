"""The `nerschat` command.

Subcommands are imported when used (click's documented lazy-loading pattern): `nerschat
serve` on a compute node should not spend a second and a half importing the OpenAI SDK.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from nerschat import __version__

COMMANDS = {
    "serve": "nerschat.cli.serve:serve",
    "ls": "nerschat.cli.endpoints:ls",
    "wait": "nerschat.cli.endpoints:wait",
    "stop": "nerschat.cli.endpoints:stop",
    "chat": "nerschat.cli.chat:chat",
    "judge": "nerschat.cli.workflows:judge",
    "run-batch": "nerschat.cli.workflows:run_batch",
    "embed": "nerschat.cli.embed:embed",
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # a command not shipped in this version
            raise
        command: click.Command = getattr(module, attr)
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nerschat")
def cli() -> None:
    """LLM and embedding servers in SLURM jobs, found through a shared registry."""


def main() -> None:
    cli(prog_name="nerschat")


if __name__ == "__main__":
    main()
