"""`nerschat serve`: run one pilot in the foreground (in a SLURM job or locally)."""

from __future__ import annotations

import logging
from typing import Any

import click

from nerschat.cli.common import console, fail, open_registry, registry_option, shared_option
from nerschat.pilot.engines import ENGINES, EngineError
from nerschat.pilot.pilot import Pilot, PilotConfig, PilotError
from nerschat.pilot.runtimes import RUNTIMES, ContainerError
from nerschat.registry import RegistryError


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--option")
        options[name.replace("-", "_")] = value
    return options


@click.command(context_settings={"show_default": True})
@click.option("--engine", type=click.Choice(sorted(ENGINES)), required=True)
@click.option("--model", required=True,
              help="Model to serve (HF id, path, or local:gemma-3-270m / local:minilm).")
@click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None,
              help="Service kind (default: from the engine/model).")
@click.option("--served-name", default=None, help="Name clients ask for (default: model).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="[default: a free port]")
@click.option("--host", default=None, help="Host name clients use [default: this host's name].")
@click.option("--gpus", default=None, help="GPU ids, e.g. 0,1 [default: $CUDA_VISIBLE_DEVICES].")
@click.option("--runtime", type=click.Choice(sorted(RUNTIMES)), default="none")
@click.option("--image", default=None, help="Container image [default: the engine's pinned one].")
@click.option("--option", "-o", "options", multiple=True, metavar="NAME=VALUE",
              help="Engine option, e.g. max_num_seqs=128, latency=0.05 (stub). Repeatable.")
@click.option("--ttl", type=click.FloatRange(min=0.5), default=30.0,
              help="Seconds without heartbeat after which the entry counts as dead.")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=900.0)
@click.option("--drain-before", type=click.FloatRange(min=0), default=120.0,
              help="Drain this many seconds before the SLURM walltime ends.")
@click.option("--grace-period", type=click.FloatRange(min=0), default=30.0,
              help="Seconds between SIGTERM and SIGKILL when stopping the server.")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Read the API key from this environment variable [default: a random key].")
@click.option("--id", "endpoint_id", default=None, metavar="ID",
              help="Registry entry id to publish under (replaces a `pending` entry that "
                   "`nerschat launch` wrote) [default: a fresh id].")
@click.option("-v", "--verbose", is_flag=True)
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
@registry_option
@shared_option
def serve(registry_path: str | None, shared: bool, engine: str, model: str, kind: str | None,
          served_name: str | None, port: int | None, host: str | None, gpus: str | None,
          runtime: str, image: str | None, options: tuple[str, ...], ttl: float,
          ready_timeout: float, drain_before: float, grace_period: float,
          api_key_env: str | None, endpoint_id: str | None, verbose: bool,
          extra_args: tuple[str, ...]) -> None:
    """Start a server and publish it in the registry until stopped.

    Arguments after `--` go to the server unchanged (e.g. `-- --enforce-eager`).
    """
    import os

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    for name in ("httpx", "httpx2"):  # one line per health probe otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            fail(f"--api-key-env {api_key_env}: that environment variable is empty or unset")
    try:
        config = PilotConfig(
            engine=engine, model=model, kind=kind, served_name=served_name,  # type: ignore[arg-type]
            port=port, host=host, gpus=tuple(g for g in gpus.split(",") if g) if gpus else None,
            api_key=api_key, runtime=runtime, image=image, extra_args=extra_args,
            options=parse_options(options), ttl=ttl, ready_timeout=ready_timeout,
            drain_before=drain_before, grace_period=grace_period, endpoint_id=endpoint_id,
        )
        pilot = Pilot(config, open_registry(registry_path, shared))
        code = pilot.run(on_ready=lambda e: console.print(
            f"[green]ready[/green] {e.id} {e.model} at {e.url}", highlight=False))
    except (EngineError, ContainerError, RegistryError, ValueError) as exc:
        fail(str(exc), code=2)
    except PilotError as exc:
        fail(str(exc))
    raise SystemExit(code)
