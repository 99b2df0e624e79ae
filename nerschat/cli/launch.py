"""`nerschat launch`: service-mode pilots in SLURM jobs (or local processes), checked first."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

from nerschat.cli.common import (
    WALLTIME,
    FiniteFloat,
    console,
    open_registry,
    registry_option,
    shared_option,
)
from nerschat.parsl.launch import build_replicas, plan, render_scripts, resolve_site, submit
from nerschat.registry import MAX_TTL
from nerschat.sites import SITES

F = TypeVar("F", bound=Callable[..., Any])


def job_options(func: F) -> F:
    """The SLURM job and server options `launch` and `pool start` share."""
    options = [
        click.option("--account", default=None,
                     help="SLURM account [default: $NERSCHAT_ACCOUNT]."),
        click.option("--qos", default=None,
                     help="SLURM QOS [default: $NERSCHAT_QOS, site default]."),
        click.option("--walltime", type=WALLTIME, default=None, metavar="HH:MM:SS",
                     help="Walltime of each job, as SLURM takes it (MM, HH:MM:SS, "
                          "D-HH:MM:SS, ...) [default: $NERSCHAT_WALLTIME, site default]."),
        click.option("--constraint", default=None, help="SLURM constraint, e.g. 'gpu&hbm80g'."),
        click.option("--image", default=None,
                     help="Container image [default: the engine's pinned one]."),
        click.option("--kind", type=click.Choice(["llm", "embedding"]), default=None),
        click.option("--served-name", default=None, help="Name clients ask for [default: model]."),
        click.option("--option", "options", multiple=True, metavar="NAME=VALUE",
                     help="Engine option passed to each `nerschat serve` (repeatable)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command(context_settings={"show_default": True})
@click.option("--engine", type=click.Choice(["vllm", "tei", "stub"]), default=None)
@click.option("--model", default=None, help="Model to serve (HF id or path).")
@click.option("--replicas", type=click.IntRange(min=1), default=1, help="Servers to start.")
@click.option("--gpus-per-replica", type=click.IntRange(min=0), default=None,
              help="GPUs per server (tensor parallel) [default: 1 for vllm/tei on a GPU site].")
@click.option("--pack", "packs", multiple=True, metavar="ENGINE:MODEL[:gpus=N]",
              help="A server of a mixed pack (repeatable), packed onto nodes with the others.")
@click.option("--site", default=None, metavar="|".join(SITES),
              help="Site config: a packaged site's name or the path of a config file "
                   "[default: perlmutter on Perlmutter, else slurm where sbatch exists, else "
                   "local].")
@job_options
@click.option("--ttl", type=FiniteFloat(0.5, MAX_TTL), default=None,
              help="Heartbeat TTL of the pilots' entries, seconds.")
@click.option("--drain-before", type=FiniteFloat(0.0), default=None,
              help="Pilots drain this many seconds before the walltime [default: 120].")
@click.option("--no-check", is_flag=True, help="Skip the pre-flight checks.")
@click.option("--keep", is_flag=True,
              help="Keep the replicas ready past the walltime: run a pool controller in the "
                   "foreground (as `nerschat pool start`; Ctrl-C drains them).")
@click.option("--print-script", "--dry-run", "print_script", is_flag=True,
              help="Print the job scripts the site's provider would submit; submit nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON on stdout.")
@click.argument("extra_args", nargs=-1, type=click.UNPROCESSED)
@registry_option
@shared_option
def launch(registry_path: str | None, shared: bool, engine: str | None, model: str | None,
           replicas: int, gpus_per_replica: int | None, packs: tuple[str, ...], site: str | None,
           account: str | None, qos: str | None, walltime: str | None, constraint: str | None,
           image: str | None, kind: str | None, served_name: str | None,
           options: tuple[str, ...], ttl: float | None, drain_before: float | None,
           no_check: bool, keep: bool, print_script: bool, as_json: bool,
           extra_args: tuple[str, ...]) -> None:
    """Submit pilots as SLURM jobs that outlive this command; print their job ids.

    Replicas are packed onto nodes by GPU count; each job's pilots appear in the registry
    as `pending` at once (see `nerschat ls`). Arguments after `--` go to every server.
    """
    registry = open_registry(registry_path, shared)
    if keep and not print_script:
        from nerschat.cli.pool import keep_ready

        keep_ready(registry, engine, model, replicas, gpus_per_replica, packs, site=site,
                   account=account, qos=qos, walltime=walltime, constraint=constraint,
                   image=image, kind=kind, served_name=served_name, options=options, ttl=ttl,
                   drain_before=drain_before, no_check=no_check, extra_args=extra_args)
        return
    module = resolve_site(site)
    members = build_replicas(engine, model, replicas, gpus_per_replica, packs, module,
                             image=image, extra_args=extra_args, kind=kind,  # type: ignore[arg-type]
                             served_name=served_name, options=options)
    launch_plan = plan(members, site=site, registry=registry, account=account, qos=qos,
                       walltime=walltime, constraint=constraint, check=not no_check, ttl=ttl,
                       drain_before=drain_before)
    if print_script:
        click.echo(render_scripts(launch_plan), nl=False)
        return
    jobs = submit(launch_plan)
    if as_json:
        click.echo(json.dumps([{"job_id": j.job_id, "ids": j.ids, "slurm": j.slurm,
                                "script": str(j.script)} for j in jobs]))
        return
    for job in jobs:
        click.echo(job.job_id)
        console.print(f"[green]submitted[/green] job {job.job_id}: {len(job.ids)} pilot(s) "
                      f"{', '.join(job.ids)}", highlight=False)
    console.print(f"watch them with `nerschat ls --registry {registry.path}`; "
                  "they are `pending` until the job starts", highlight=False)


@click.command(context_settings={"show_default": True})
@click.argument("model")
@click.option("--site", default=None, metavar="|".join(SITES),
              help="Site whose model cache and container runtime the pilots use [default: as "
                   "for launch].")
@click.option("--engine", type=click.Choice(["vllm", "tei"]), default="vllm",
              help="Engine whose image to pull where the site runs containers.")
@click.option("--image", default=None, help="Image to pull [default: the engine's pinned one].")
@click.option("--no-image", is_flag=True, help="Download the weights only.")
@click.option("--hf-home", default=None, help="Cache directory [default: the site's HF_HOME].")
@click.option("--revision", default=None, help="Branch, tag or commit [default: main].")
@click.option("--all-files", is_flag=True,
              help="Also download formats the engines do not load (original/, *.pth, ONNX).")
def prefetch(model: str, site: str | None, engine: str, image: str | None, no_image: bool,
             hf_home: str | None, revision: str | None, all_files: bool) -> None:
    """Get what MODEL's pilots need onto the site, on a login node: weights, then the image.

    Weights go into the cache the site's pilots read (they run offline); on a Shifter or
    podman-hpc site the engine's pinned image is pulled unless already there. `nerschat
    launch` checks both before queuing.
    """
    from nerschat.parsl.config import site_of
    from nerschat.parsl.launch import default_image
    from nerschat.parsl.prefetch import prefetch as download
    from nerschat.parsl.prefetch import pull_image
    from nerschat.parsl.preflight import expand_path

    facts = site_of(resolve_site(site), engine)
    if hf_home is None:
        hf_home = facts.hf_home or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    cache = expand_path(hf_home, "HF_HOME")
    with console.status(f"downloading {model} into {cache}"):
        path = download(model, cache, revision=revision, all_files=all_files)
    console.print(f"[green]cached[/green] {model} in {path}", highlight=False)
    if not no_image and facts.runtime != "none":
        wanted = image or default_image(engine)
        with console.status(f"pulling {wanted} for {facts.runtime}"):
            done = pull_image(facts.runtime, wanted)
        if done:
            console.print(f"[green]{done}[/green] {wanted} ({facts.runtime})", highlight=False)
    click.echo(str(path))
