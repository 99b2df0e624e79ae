"""What every engine recipe provides to the pilot, and how recipes are looked up.

A recipe turns "serve model M on port P with GPUs G" into a concrete server command, the
environment it needs (secrets kept apart so no runtime puts them on a command line), the
health path to probe, and the kind of service it offers. Adding an engine means adding one
module here and registering it in `nerschat.pilot.engines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from nerschat.engine_metrics import MetricNames
from nerschat.errors import UsageError
from nerschat.registry import Kind


class EngineError(UsageError, ValueError):
    """An engine cannot serve what was asked (unknown engine, bad option, missing set-up)."""


@dataclass(frozen=True)
class LaunchRequest:
    """What the user asked the pilot for.

    `image` is the container image the runtime will use (None outside containers); a recipe
    may adapt its flags to the engine version it names. `stop_timeout` is how many seconds
    the server gets between SIGTERM and SIGKILL: engines with their own graceful shutdown
    (vLLM >= 0.18 `--shutdown-timeout`) are told to finish requests within it.
    """

    model: str
    port: int
    api_key: str
    gpus: tuple[str, ...] = ()
    kind: Kind | None = None
    served_name: str | None = None
    containerized: bool = False
    extra_args: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    image: str | None = None
    stop_timeout: float = 0.0


@dataclass(frozen=True)
class ServerLaunch:
    """A server command ready for a container runtime to wrap.

    Paths are relative to the server's root URL: `health_path` answers 200 without a key
    once the server is ready; `auth_path` is a GET route that needs the API key (the pilot
    checks that the server on its port accepts its key and refuses another, so it never
    publishes somebody else's server); `metrics_path` serves Prometheus text with the
    server's queue (None when the engine has none on its API port), and `metrics` names what
    in it is load and progress (None: nothing known; the pilot publishes its load gauges in
    the entry's `load_metrics`). `capacity` is requests served at once, `max_model_len` tokens.
    """

    argv: list[str]
    env: dict[str, str]
    secret_env: dict[str, str]
    kind: Kind
    served_model: str
    health_path: str = "/health"
    auth_path: str = "/v1/models"
    metrics_path: str | None = "/metrics"
    metrics: MetricNames | None = None
    capacity: int | None = None
    max_model_len: int | None = None


class EngineRecipe(Protocol):
    """An engine: its name, its pinned container image, and how to launch its server.

    `launch` raises EngineError for an option or model the engine cannot serve.
    """

    @property
    def name(self) -> str:
        """The engine's name, as `--engine` takes it."""
        ...

    @property
    def default_image(self) -> str | None:
        """The pinned container image (None: the engine runs without one)."""
        ...

    def launch(self, request: LaunchRequest) -> ServerLaunch:
        """The server command for `request`."""
        ...


T = TypeVar("T")


def named(table: dict[str, T], name: str, what: str, error: type[UsageError]) -> T:
    """`table[name]`, else `error` saying "unknown WHAT NAME; choose one of: ..."."""
    try:
        return table[name]
    except KeyError:
        raise error(f"unknown {what} {name!r}; choose one of: {', '.join(sorted(table))}") from None


def option_int(options: dict[str, Any], name: str) -> int | None:
    """An integer option or None; a clear error naming the option otherwise."""
    value = options.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise EngineError(f"option {name}={value!r} is not an integer") from None


def check_options(engine: str, options: dict[str, Any], allowed: set[str]) -> None:
    """Raise EngineError naming every option the engine does not take."""
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise EngineError(
            f"engine {engine!r} does not take option(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(allowed)) or 'none'}"
        )
