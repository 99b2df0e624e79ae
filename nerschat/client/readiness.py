"""Waiting for a ready endpoint, and saying clearly what was seen when none came."""

from __future__ import annotations

import time
from collections.abc import Callable

from nerschat.errors import FailureError
from nerschat.registry import Endpoint, Registry
from nerschat.slurm import pending_job_ids


class EndpointTimeout(FailureError, TimeoutError):
    """No usable endpoint appeared in time; the message is one line saying what was seen."""


def _matches(entry: Endpoint, model: str | None, kind: str | None) -> bool:
    return (model is None or entry.model == model) and (kind is None or entry.kind == kind)


def _target(model: str | None, kind: str | None) -> str:
    if model and kind:
        return f"{kind} model {model!r}"
    if model:
        return f"model {model!r}"
    return f"any {kind} endpoint" if kind else "any endpoint"


def describe_status(registry: Registry, model: str | None = None, kind: str | None = None,
                    entries: list[Endpoint] | None = None) -> str:
    """One line on why nothing usable is there yet: nothing registered, starting, stale."""
    now = time.time()
    if entries is None:
        entries = registry.scan().entries
    matching = [e for e in entries if _matches(e, model, kind)]
    target = _target(model, kind)
    if not matching:
        others = sorted({e.model for e in entries if not e.is_stale(now)})
        seen = f"; registered: {', '.join(others)}" if others else ""
        pending = pending_job_ids()
        if pending:
            seen += f"; SLURM job(s) {', '.join(pending)} pending"
        return f"nothing registered for {target} in {registry.path}{seen}"
    fresh = [e for e in matching if not e.is_stale(now)]
    starting = [e for e in fresh if e.state == "starting"]
    if starting:
        oldest = min(starting, key=lambda e: e.started_at)
        return (f"{target}: {len(starting)} endpoint(s) starting, the oldest for "
                f"{now - oldest.started_at:.0f} s (log: {oldest.log_path})")
    if any(e.state == "draining" for e in fresh):
        return f"{target}: only draining endpoints (pilots stopping)"
    if fresh:
        return f"{target}: {len(fresh)} endpoint(s) not usable"
    newest = max(e.heartbeat_at for e in matching)
    return (f"{target}: only stale entries (last heartbeat {now - newest:.0f} s ago; pilots gone? "
            f"'nerschat ls --prune' removes them)")


def wait_for_endpoints(
    registry: Registry,
    model: str | None = None,
    kind: str | None = None,
    timeout: float = 600.0,
    poll_interval: float = 0.5,
    on_status: Callable[[str], None] | None = None,
) -> list[Endpoint]:
    """Block until at least one matching endpoint is ready; raise EndpointTimeout otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        entries = registry.scan().entries
        ready = [e for e in entries if _matches(e, model, kind) and e.is_usable()]
        if ready:
            return ready
        status = describe_status(registry, model, kind, entries)
        if on_status is not None:
            on_status(status)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise EndpointTimeout(f"no ready endpoint after {timeout:.0f} s: {status}")
        time.sleep(min(poll_interval, remaining))


__all__ = ["EndpointTimeout", "describe_status", "wait_for_endpoints"]
