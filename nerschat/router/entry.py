"""The router's own registry entry (kind `router`): how users and tools find it and its key.

The key is generated unless the router was given an environment variable to read it from;
a generated key lives only in the entry file (mode 0600 like every entry); a key from the
environment is not written anywhere, the entry names the variable instead.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
import uuid
from dataclasses import dataclass

from nerschat.envkey import key_from_env
from nerschat.errors import FailureError
from nerschat.pilot.walltime import current_job_id
from nerschat.registry import Endpoint, Registry

ROUTER_KIND = "router"
ROUTER_MODEL = "nerschat-router"
KEY_ENV_FIELD = "api_key_env"


class NoRouter(FailureError, TimeoutError):
    """No live router in the registry within the time asked."""


@dataclass(frozen=True)
class RouterKey:
    """The inbound key and where a user finds it (`env` names a variable, else the entry)."""

    value: str
    env: str | None = None

    def __repr__(self) -> str:
        return f"RouterKey(env={self.env!r})"


def router_key(env_var: str | None) -> RouterKey:
    """The key from `env_var` (which must be set and non-empty), or a new random one."""
    if env_var is None:
        return RouterKey(secrets.token_urlsafe(32))
    return RouterKey(key_from_env(env_var), env_var)


def advertised_host(bind_host: str) -> str:
    """The name clients use: `NERSCHAT_ADVERTISE_HOST`, the bound address, or the host name."""
    if os.environ.get("NERSCHAT_ADVERTISE_HOST"):
        return os.environ["NERSCHAT_ADVERTISE_HOST"]
    if bind_host in ("", "0.0.0.0", "::"):
        return socket.gethostname()
    return bind_host


def new_entry(host: str, port: int, key: RouterKey, ttl: float) -> Endpoint:
    """A ready `router` entry for `host:port` (the key kept in it unless from the env)."""
    now = time.time()
    return Endpoint(
        id=f"router.{host}.{port}.{uuid.uuid4().hex[:6]}", kind="router", engine="router",
        model=ROUTER_MODEL, url=f"http://{host}:{port}/v1", state="ready",
        api_key=None if key.env else key.value, pid=os.getpid(), host=host,
        slurm_job_id=current_job_id(), heartbeat_at=now, ttl=ttl,
        started_at=now, ready_at=now, extra={KEY_ENV_FIELD: key.env} if key.env else {},
    )


def key_location(registry: Registry, entry: Endpoint) -> str:
    """One line saying where the router's key is, without the key."""
    env = entry.extra.get(KEY_ENV_FIELD)
    if env:
        return f"${env} in the router's environment"
    return f"field api_key of {registry.entry_path(entry.id)}"


def live_routers(registry: Registry, now: float | None = None) -> list[Endpoint]:
    """Ready, fresh router entries, newest first."""
    now = time.time() if now is None else now
    routers = [e for e in registry.scan().entries
               if e.kind == ROUTER_KIND and e.state == "ready" and not e.is_stale(now)]
    return sorted(routers, key=lambda e: e.started_at, reverse=True)



def wait_for_router(registry: Registry, timeout: float, poll: float = 0.5) -> Endpoint:
    """The newest live router, waiting up to `timeout` s; `NoRouter` (exit 1) if none."""
    deadline = time.monotonic() + timeout
    while True:
        routers = live_routers(registry)
        if routers:
            return routers[0]
        if time.monotonic() >= deadline:
            raise NoRouter(f"no router in {registry.path} after {timeout:.0f} s; "
                                  f"start one with 'nerschat router'")
        time.sleep(poll)
