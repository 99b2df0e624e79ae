"""`nerschat tunnel`: reach the router from a laptop through a login node (`ssh -L`)."""

from __future__ import annotations

import getpass
import os
import shlex
import subprocess
from urllib.parse import urlsplit

import click

from nerschat.cli.common import console, fail, open_registry, registry_option
from nerschat.registry import Endpoint, Registry
from nerschat.router.entry import KEY_ENV_FIELD, live_routers

DEFAULT_LOGIN = "perlmutter.nersc.gov"


def ssh_argv(router: Endpoint, login: str, user: str, local_port: int) -> list[str]:
    """`ssh -N -L LOCAL:ROUTER_HOST:ROUTER_PORT USER@LOGIN` as an argument list."""
    parts = urlsplit(router.url)
    forward = f"{local_port}:{parts.hostname}:{parts.port}"
    return ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", forward, f"{user}@{login}"]


def key_command(registry: Registry, router: Endpoint, login: str, user: str) -> str:
    """A laptop command printing the router's key: the entry read over ssh, parsed locally."""
    path = shlex.quote(str(registry.entry_path(router.id)))
    parse = "python3 -c 'import json, sys; print(json.load(sys.stdin)[\"api_key\"])'"
    return f"ssh {user}@{login} cat {path} | {parse}"


def instructions(registry: Registry, router: Endpoint, login: str, user: str,
                 local_port: int) -> str:
    """The `export OPENAI_*` lines, the ssh forward and usage examples, as printed."""
    base = f"http://localhost:{local_port}"
    env = router.extra.get(KEY_ENV_FIELD)
    if env:
        key_line = f'export OPENAI_API_KEY="..."   # the value of ${env} the router runs with'
    else:
        key_line = f'export OPENAI_API_KEY="$({key_command(registry, router, login, user)})"'
    return "\n".join([
        "# 1. On your laptop, keep this running (forwards the router through the login node):",
        shlex.join(ssh_argv(router, login, user, local_port)),
        "# 2. In another terminal on the laptop, fetch the key into the environment:",
        key_line,
        f"export OPENAI_BASE_URL={base}/v1",
        "# 3. Any OpenAI client now works, e.g.",
        f'curl -s {base}/v1/models -H "Authorization: Bearer $OPENAI_API_KEY"',
        'python -c "import openai; print([m.id for m in openai.OpenAI().models.list()])"',
        f"# Chat page: open {base}/ in a browser and paste the key once.",
    ])


@click.command(context_settings={"show_default": True})
@click.option("--login", default=lambda: os.environ.get("NERSCHAT_LOGIN_HOST", DEFAULT_LOGIN),
              show_default=f"$NERSCHAT_LOGIN_HOST or {DEFAULT_LOGIN}",
              help="Login node the laptop can ssh to.")
@click.option("--user", default=getpass.getuser, show_default="you",
              help="User name on the login node.")
@click.option("--local-port", type=click.IntRange(1, 65535), default=None,
              help="Port on the laptop [default: the router's port].")
@click.option("--run", "run_it", is_flag=True,
              help="Run the ssh command here instead of printing it (until Ctrl-C).")
@registry_option
def tunnel(registry_path: str | None, login: str, user: str,
           local_port: int | None, run_it: bool) -> None:
    """Print (or run) the ssh port forward to the router and how to use its key."""
    registry = open_registry(registry_path)
    routers = live_routers(registry)
    if not routers:
        fail(f"no router running in {registry.path}: start one with 'nerschat router' "
             f"(e.g. in a SLURM job next to the servers)")
    router = routers[0]
    port = local_port or urlsplit(router.url).port or 8000
    if not run_it:
        click.echo(instructions(registry, router, login, user, port))
        return
    argv = ssh_argv(router, login, user, port)
    console.print(f"forwarding localhost:{port} to {router.url} via {login} (Ctrl-C stops)",
                  highlight=False)
    try:
        status = subprocess.call(argv)
    except FileNotFoundError:
        fail("ssh not found on PATH")
    if status != 0:
        fail(f"ssh exited {status}")
