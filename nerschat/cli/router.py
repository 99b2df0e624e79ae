"""`nerschat router`: one OpenAI-compatible URL for every model in the registry."""

from __future__ import annotations

import asyncio

import click

from nerschat.cli.common import console, open_registry, registry_option, shared_option
from nerschat.registry import Registry
from nerschat.router import Router, RouterConfig, router_key, run_router
from nerschat.router.entry import key_location, wait_for_router


def echo_router(registry: Registry, timeout: float) -> None:
    """`nerschat wait --router`: the router's URL on stdout, where its key is on stderr."""
    entry = wait_for_router(registry, timeout)
    click.echo(entry.url)
    console.print(f"key: {key_location(registry, entry)}", highlight=False, soft_wrap=True)


@click.command(context_settings={"show_default": True})
@click.option("--host", default="0.0.0.0", help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=0,
              help="Port to listen on (0: a free one; the registry entry has it).")
@click.option("--api-key-env", default=None, metavar="VAR",
              help="Read the router's key from this environment variable "
                   "[default: generate one and keep it in the router's registry entry].")
@click.option("--wait-timeout", type=click.FloatRange(min=0), default=300.0,
              help="Seconds a request waits for a replica of a starting or failing model.")
@click.option("--request-timeout", type=click.FloatRange(min=0.1), default=600.0,
              help="Seconds of upstream silence before an attempt fails over.")
@registry_option
@shared_option
def router(registry_path: str | None, shared: bool, host: str, port: int,
           api_key_env: str | None, wait_timeout: float, request_timeout: float) -> None:
    """Serve every ready model of the registry at one URL (OpenAI and TEI routes)."""
    registry = open_registry(registry_path, shared)
    config = RouterConfig(registry, router_key(api_key_env), host=host, port=port,
                          wait_timeout=wait_timeout, request_timeout=request_timeout)

    def ready(running: Router) -> None:
        console.print(f"router ready at {running.url} (chat page: "
                      f"{running.url.removesuffix('/v1')}/); key: {running.key_location()}",
                      highlight=False, soft_wrap=True)

    asyncio.run(run_router(config, on_ready=ready))
