"""`nerschat serve`: run one pilot in the foreground (in a SLURM job or locally)."""

from __future__ import annotations

import logging
from typing import Any

import click

from nerschat.cli.common import (
    WALLTIME,
    api_key_env_option,
    console,
    fail,
    open_registry,
    registry_option,
    seconds_option,
    shared_option,
)
from nerschat.envkey import key_from_env
from nerschat.errors import NerschatError
from nerschat.pilot.engines import ENGINES
from nerschat.pilot.pilot import Pilot, PilotConfig
from nerschat.pilot.runtimes import RUNTIMES
from nerschat.registry import MAX_TTL, Kind
from nerschat.slurm import parse_walltime

ENVIRONMENT = """\b
Environment:
  NERSCHAT_REGISTRY        registry directory (when --registry is not given)
  NERSCHAT_ADVERTISE_HOST  host name clients use (when --host is not given)
  CUDA_VISIBLE_DEVICES     GPUs to use (when --gpus is not given)
  SLURM_JOB_ID             the job this pilot runs in; its walltime end comes from squeue
  HF_HOME                  model cache for vllm/tei (unless -E hf_cache=DIR)
  NERSCHAT_HOME            where the local CPU engine and local: models live
  VAR of --api-key-env     the API key (otherwise a random one)
"""


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """Turn NAME=VALUE pairs into engine options.

    `("max_num_seqs=64", "latency=0.1")` -> `{"max_num_seqs": "64", "latency": "0.1"}`;
    dashes in names become underscores. click.BadParameter for a pair without `=`.
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--engine-opt")
        options[name.replace("-", "_")] = value
    return options


@click.command(context_settings={"show_default": True}, epilog=ENVIRONMENT)
@click.option("--engine", type=click.Choice(sorted(ENGINES)), required=True)
@click.option("--model", required=True,
              help="Model to serve (HF id, path, or local:gemma-3-270m / local:minilm).")
@click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None,
              help="Service kind (default: from the engine/model).")
@click.option("--served-name", default=None, help="Name clients ask for (default: model).")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Port to listen on; refused if in use [default: a free port].")
@click.option("--host", default=None, help="Host name clients use [default: this host's name].")
@click.option("--gpus", default=None, help="GPU ids, e.g. 0,1 [default: $CUDA_VISIBLE_DEVICES].")
@click.option("--runtime", type=click.Choice(sorted(RUNTIMES)), default="none")
@click.option("--image", default=None, help="Container image [default: the engine's pinned one].")
@click.option("--runtime-modules", default="", metavar="A,B",
              help="Modules the container runtime loads, e.g. Shifter's gpu,nccl-plugin "
                   "(`nerschat launch` passes the site's) [default: none].")
@click.option("--engine-opt", "-E", "options", multiple=True, metavar="NAME=VALUE",
              help="Engine option, e.g. max_num_seqs=128, latency=0.05 (stub). Repeatable.")
@click.option("--option", "-o", "old_options", multiple=True, metavar="NAME=VALUE", hidden=True,
              help="Old spelling of --engine-opt.")
@seconds_option("--ttl", 30.0, minimum=0.5, no_limit=False, maximum=MAX_TTL,
                help="Seconds without heartbeat after which the entry counts as dead.")
@seconds_option("--ready-timeout", 900.0, minimum=1,
                help="Seconds the server may take to become ready.")
@seconds_option("--drain-before", 120.0, no_limit=False,
                help="Start draining this many seconds before the SLURM walltime ends.")
@seconds_option("--grace-period", 60.0,
                help="Seconds a drain (SIGTERM, `nerschat stop`) waits for requests in flight; "
                     "a walltime drain uses the time left instead.")
@seconds_option("--stop-timeout", 15.0,
                help="Seconds between SIGTERM and SIGKILL when stopping the server.")
@seconds_option("--health-timeout", 5.0, minimum=0.1,
                help="Seconds one liveness probe of the ready server may take.")
@click.option("--health-failures", type=click.IntRange(min=1), default=3,
              help="Failed probes in a row that mark the entry unhealthy (not routed to).")
@seconds_option("--stall-timeout", 120.0,
                help="A probe also fails when the server holds requests but its token counters "
                     "did not move for this many seconds (stuck engine; 0: no such check).")
@seconds_option("--unhealthy-timeout", 300.0,
                help="Seconds an unhealthy server may take to recover before the pilot kills "
                     "it (and restarts it or exits 1, see --max-restarts; 0: never).")
@click.option("--walltime", type=WALLTIME, default=None, metavar="HH:MM:SS",
              help="Drain and stop by this time from the start (SLURM forms: MM, HH:MM:SS, "
                   "D-HH:MM:SS, ...); inside SLURM the job's own end counts too, whichever "
                   "comes first [default: the SLURM job's end, else none].")
@click.option("--max-restarts", type=click.IntRange(min=0), default=0,
              help="Restart a server that dies or stays unhealthy, in place, at most this "
                   "many times per 10 minutes; past that the pilot exits non-zero.")
@api_key_env_option("a random key")
@click.option("--id", "endpoint_id", default=None, metavar="ID",
              help="Registry entry id to publish under (replaces a `pending` entry that "
                   "`nerschat launch` wrote) [default: a fresh id].")
@click.option("-v", "--verbose", is_flag=True)
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
@registry_option
@shared_option
def serve(registry_path: str | None, shared: bool, engine: str, model: str, kind: Kind | None,
          served_name: str | None, port: int | None, host: str | None, gpus: str | None,
          runtime: str, image: str | None, runtime_modules: str, options: tuple[str, ...],
          old_options: tuple[str, ...], ttl: float, ready_timeout: float, drain_before: float,
          grace_period: float, stop_timeout: float, health_timeout: float,
          health_failures: int, stall_timeout: float, unhealthy_timeout: float,
          max_restarts: int, walltime: str | None, api_key_env: str | None, endpoint_id: str | None, verbose: bool,
          extra_args: tuple[str, ...]) -> None:
    """Start a server and publish it in the registry until stopped.

    Arguments after `--` go to the server unchanged (e.g. `-- --enforce-eager`).
    SIGTERM, `nerschat stop` or the walltime drain it: clients stop sending, requests in
    flight finish (up to --grace-period), then the server stops. Exit status: 0 after a
    requested stop, 2 for a bad request (e.g. a --port in use), else non-zero.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    for name in ("httpx", "httpx2"):  # one line per health probe otherwise
        logging.getLogger(name).setLevel(logging.WARNING)
    if old_options:
        click.echo("warning: -o/--option is deprecated for serve (-o means --output "
                   "elsewhere): use -E/--engine-opt NAME=VALUE", err=True)
    try:
        api_key = key_from_env(api_key_env) if api_key_env else None
        config = PilotConfig(
            engine=engine, model=model, kind=kind, served_name=served_name,
            port=port, host=host, gpus=tuple(g for g in gpus.split(",") if g) if gpus else None,
            api_key=api_key, runtime=runtime, image=image, extra_args=extra_args,
            runtime_modules=tuple(m for m in runtime_modules.split(",") if m),
            options=parse_options(old_options + options), ttl=ttl, ready_timeout=ready_timeout,
            drain_before=drain_before, grace_period=grace_period, stop_timeout=stop_timeout,
            health_timeout=health_timeout, health_failures=health_failures,
            stall_timeout=stall_timeout,
            unhealthy_timeout=unhealthy_timeout, max_restarts=max_restarts,
            endpoint_id=endpoint_id,
            walltime=parse_walltime(walltime).seconds if walltime is not None else None,
        )
        pilot = Pilot(config, open_registry(registry_path, shared))
        code = pilot.run(on_ready=lambda e: console.print(
            f"[green]ready[/green] {e.id} {e.model} at {e.url}", highlight=False))
    except NerschatError as exc:
        fail(str(exc), code=exc.exit_code)
    except ValueError as exc:
        fail(str(exc), code=2)
    raise SystemExit(code)
