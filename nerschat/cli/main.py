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
    "launch": "nerschat.cli.launch:launch",
    "prefetch": "nerschat.cli.launch:prefetch",
    "pool": "nerschat.cli.pool:pool",
    "ls": "nerschat.cli.endpoints:ls",
    "wait": "nerschat.cli.endpoints:wait",
    "stop": "nerschat.cli.endpoints:stop",
    "logs": "nerschat.cli.logs:logs",
    "chat": "nerschat.cli.chat:chat",
    "judge": "nerschat.cli.workflows:judge",
    "judge-report": "nerschat.cli.judge_report:judge_report",
    "run-batch": "nerschat.cli.workflows:run_batch",
    "embed": "nerschat.cli.embed:embed",
    "router": "nerschat.cli.router:router",
    "tunnel": "nerschat.cli.tunnel:tunnel",
    "job-body": "nerschat.cli.jobscript:job_body",
}


# The environment variables each command reads, shown at the end of its --help and in
# `nerschat --version` (one variable per concept).
ENVIRONMENT = {
    "NERSCHAT_REGISTRY": "registry directory when --registry is not given "
                         "[default: ~/.nerschat/registry]",
    "NERSCHAT_ALLOWED_HOSTS": "host patterns a registry entry's URL may use, e.g. "
                              "'nid*,*.example.org' [default: loopback, single-label names, "
                              "this machine's domain, private addresses]",
    "NERSCHAT_HOME": "where the local CPU engine and its models live [default: ~/.cache/nerschat]",
    "NERSCHAT_ADVERTISE_HOST": "host name a pilot publishes in its URL [default: the node's name]",
    "HF_HOME": "Hugging Face cache the engines load weights from",
    "SLURM_JOB_ID": "set by SLURM: the pilot records its job and reads its walltime end",
    "NERSCHAT_ACCOUNT": "SLURM account of launched jobs when --account is not given",
    "NERSCHAT_QOS": "SLURM QOS of launched jobs when --qos is not given",
    "NERSCHAT_WALLTIME": "walltime (a SLURM time: MM, HH:MM:SS, D-HH:MM:SS, ...) of launched "
                         "jobs when --walltime is not given",
    "NERSCHAT_ENV": "perlmutter site: the venv with nerschat that every job activates",
    "NERSCHAT_PARTITION": "slurm site: partition of launched jobs",
    "NERSCHAT_GPUS_PER_NODE": "slurm site: GPUs per node (replicas are packed by it)",
    "NERSCHAT_CORES_PER_NODE": "slurm site: cores per job",
    "NERSCHAT_LAUNCHER": "slurm site: `single` or `srun`",
    "NERSCHAT_RUNTIME": "slurm site: container runtime of the pilots [default: none]",
    "NERSCHAT_RUNTIME_MODULES": "slurm site: modules the runtime loads, e.g. gpu,nccl-plugin "
                                "for Shifter [default: none]",
    "NERSC_HOST": "set by NERSC: `perlmutter` makes --site default to perlmutter",
    "HF_TOKEN": "Hugging Face token for gated models (read by huggingface_hub, never argv)",
}
COMMAND_ENVIRONMENT = {
    "serve": ["NERSCHAT_REGISTRY", "NERSCHAT_HOME", "NERSCHAT_ADVERTISE_HOST", "HF_HOME",
              "SLURM_JOB_ID"],
    "ls": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "wait": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "stop": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "logs": ["NERSCHAT_REGISTRY"],
    "chat": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "judge": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "run-batch": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "embed": ["NERSCHAT_REGISTRY", "NERSCHAT_ALLOWED_HOSTS"],
    "launch": ["NERSCHAT_REGISTRY", "NERSCHAT_ACCOUNT", "NERSCHAT_QOS", "NERSCHAT_WALLTIME",
               "NERSCHAT_ENV", "NERSCHAT_PARTITION", "NERSCHAT_GPUS_PER_NODE",
               "NERSCHAT_CORES_PER_NODE", "NERSCHAT_LAUNCHER", "NERSCHAT_RUNTIME",
               "NERSCHAT_RUNTIME_MODULES", "HF_HOME", "NERSC_HOST"],
    "prefetch": ["HF_HOME", "HF_TOKEN", "NERSC_HOST"],
    "pool": ["NERSCHAT_REGISTRY", "NERSCHAT_ACCOUNT", "NERSCHAT_QOS", "NERSCHAT_WALLTIME",
             "NERSCHAT_ENV", "NERSCHAT_PARTITION", "NERSCHAT_GPUS_PER_NODE", "NERSC_HOST"],
}


def environment_epilog(names: list[str]) -> str:
    """The 'Environment variables' block appended to a command's --help."""
    width = max(len(name) for name in names)
    lines = [f"  {name.ljust(width)}  {ENVIRONMENT[name]}" for name in names]
    return "\b\nEnvironment variables:\n" + "\n".join(lines)


class LazyGroup(click.Group):
    """A click group that imports each subcommand's module only when it is used."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, loaded or not, sorted."""
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return one command (None if unknown), its help ending in its env vars."""
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
        from nerschat.cli.common import harden_params

        harden_params(command)  # no nan, no undecodable text, whichever module has the option
        names = COMMAND_ENVIRONMENT.get(cmd_name)
        if names and "Environment variables:" not in (command.epilog or ""):
            epilog = environment_epilog(names)
            command.epilog = f"{command.epilog}\n\n{epilog}" if command.epilog else epilog
        return command


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, prog_name="nerschat",
    message="%(prog)s %(version)s\n\n" + environment_epilog(sorted(ENVIRONMENT))[2:])
def cli() -> None:
    """LLM and embedding servers in SLURM jobs, found through a shared registry."""


def main() -> None:
    """Run the CLI; every error nerschat expects ends as one line and an exit status.

    `NerschatError` exits with its own status (2 for usage errors, 1 for failures); a
    permission problem, a full disk or a read-only output directory exits 1 with the path;
    Ctrl-C exits 130. Anything else is a bug and keeps its traceback.
    """
    from nerschat.cli.common import print_error
    from nerschat.errors import NerschatError

    try:
        cli(prog_name="nerschat", standalone_mode=False)
    except click.exceptions.Abort:
        print_error("aborted")
        raise SystemExit(130) from None
    except click.UsageError as exc:  # one line: `error: Invalid value for '--x': ...`
        if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            exc.show()  # `nerschat` or `nerschat pool` alone: the help, as click prints it
            raise SystemExit(exc.exit_code) from None
        where = f" (see '{exc.ctx.command_path} -h')" if exc.ctx is not None else ""
        print_error(exc.format_message() + where)
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except NerschatError as exc:
        print_error(str(exc))
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        print_error("interrupted")
        raise SystemExit(130) from None
    except OSError as exc:
        print_error(describe_os_error(exc))
        raise SystemExit(1) from None


def describe_os_error(exc: OSError) -> str:
    """`PermissionError`, `ENOSPC`, `EROFS`, ... as one line naming the path and the fix."""
    import errno

    where = f" {exc.filename}" if exc.filename else ""
    hints = {
        errno.EACCES: "check the directory's owner and mode",
        errno.EPERM: "check the directory's owner and mode",
        errno.ENOSPC: "the file system is full: free space or write elsewhere (-o)",
        errno.EDQUOT: "over your disk quota: free space or write elsewhere (-o)",
        errno.EROFS: "the file system is read-only: write elsewhere (-o)",
    }
    hint = hints.get(exc.errno or 0)
    reason = exc.strerror or str(exc)
    return f"{reason}:{where}" + (f" ({hint})" if hint else "")


if __name__ == "__main__":
    main()
