"""The site-config contract, and helpers shared by the site configs and `--config` loading.

A site config is a Python module (the packaged `nerschat.sites.local`, `slurm`, `perlmutter`,
or a user's copy of one, loaded from its path) that provides:

- `make_config(**kwargs) -> parsl.config.Config`: workflow mode, with the two labelled
  executors `pilots` and `clients`;
- `site(engine: str) -> Site`: facts about where pilots of that engine run (container
  runtime and its modules, model and compile caches, environment) -- never an image: images
  come from the engine recipes (`nerschat.pilot.engines`) or the user's `--image`;
- `pilot_provider(request: JobRequest) -> ExecutionProvider`: the Parsl provider (with its
  launcher) that submits service-mode pilot jobs (`nerschat launch`); the same provider
  settings the config's `pilots` executor uses.

Optionally, `gpus_per_job(qos) -> int` caps the GPUs one launched job may hold when a QOS
allows less than a node (replicas are packed by it instead of `Site.gpus_per_node`).

`SiteConfig` is that contract as a Protocol; `site_of` and `pilot_provider_of` read it from a
loaded module with one-line errors when a piece is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from nerschat.errors import UsageError

if TYPE_CHECKING:
    from parsl.config import Config
    from parsl.providers.base import ExecutionProvider

PILOT_EXECUTOR = "pilots"
CLIENT_EXECUTOR = "clients"


class ConfigError(UsageError, ValueError):
    """A Parsl config that cannot be built: names the missing argument and its env var."""


# Environment variables that earlier versions read; each concept now has one variable.
RENAMED_ENV = {
    "NERSCHAT_SLURM_ACCOUNT": "NERSCHAT_ACCOUNT",
    "NERSCHAT_SLURM_QOS": "NERSCHAT_QOS",
    "NERSCHAT_SLURM_WALLTIME": "NERSCHAT_WALLTIME",
    "NERSCHAT_SLURM_PARTITION": "NERSCHAT_PARTITION",
    "NERSCHAT_SLURM_GPUS_PER_NODE": "NERSCHAT_GPUS_PER_NODE",
    "NERSCHAT_SLURM_CORES_PER_NODE": "NERSCHAT_CORES_PER_NODE",
    "NERSCHAT_SLURM_LAUNCHER": "NERSCHAT_LAUNCHER",
}


def check_renamed_env() -> None:
    """Refuse a variable that is no longer read, naming the one that replaced it.

    Raises
    ------
    ConfigError
        if one of `RENAMED_ENV` is set (silently ignoring it would bill the wrong account).
    """
    for old, new in RENAMED_ENV.items():
        if os.environ.get(old):
            raise ConfigError(f"${old} is no longer read: rename it to ${new}")


def walltime_seconds(walltime: str) -> int:
    """A SLURM time limit (`nerschat.slurm.parse_walltime`) in seconds; ConfigError if not one."""
    from nerschat.slurm import parse_walltime

    try:
        return parse_walltime(walltime).seconds
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def normalize_walltime(walltime: str) -> str:
    """A SLURM time limit as the `HH:MM:SS` Parsl's providers take; ConfigError if not one."""
    from nerschat.slurm import Walltime

    return Walltime(walltime_seconds(walltime)).hms


def walltime_setting(value: str | None, default: str) -> str:
    """`value`, else `$NERSCHAT_WALLTIME`, else `default`, as `HH:MM:SS` (ConfigError if bad)."""
    return normalize_walltime(setting(value, "walltime", "NERSCHAT_WALLTIME", default))


@dataclass(frozen=True)
class Site:
    """Facts about where pilots of one engine run; what a site config's `site(engine)` returns.

    Attributes
    ----------
    name : str
        the site's name (`local`, `slurm`, `perlmutter`, ...), shown in messages.
    runtime : str
        container runtime the pilots use (`none`, `shifter`, `podman-hpc`, `apptainer`).
    modules : tuple of str
        runtime modules (Shifter `--module=`), e.g. `("gpu", "nccl-plugin")`.
    hf_home : str or None
        the Hugging Face cache as the compute nodes see it (may hold `$SCRATCH`-style
        variables, expanded on the node); None leaves `HF_HOME` as the job inherits it.
    offline : bool
        pilots run with `HF_HUB_OFFLINE=1`, so weights must be in `hf_home` before queuing.
    env : mapping of str to str
        further environment for the pilots (compile caches, ...); values may hold `$VARS`.
    gpus_per_node : int
        GPUs on one node of the partition pilots run on (0: none; replicas are packed by it).
    cluster : bool
        pilots run on other nodes than the caller, so the registry must be on a file system
        those nodes see.
    python_env : str or None
        the environment (venv) with nerschat that the jobs activate, as the login node sees
        it on the shared file system; checked before queuing when given.
    compile_cache : str or None
        root of the per-model vLLM compile caches (`VLLM_CACHE_ROOT` becomes
        `<compile_cache>/<model>/<slot>`, so replicas starting together never write one
        cache at once); None leaves vLLM's default.
    """

    name: str
    runtime: str = "none"
    modules: tuple[str, ...] = ()
    hf_home: str | None = None
    offline: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    gpus_per_node: int = 0
    cluster: bool = False
    python_env: str | None = None
    compile_cache: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.modules, tuple):
            raise ConfigError(f"Site.modules must be a tuple of str, got {self.modules!r}")
        if not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise ConfigError(f"Site.gpus_per_node must be an int >= 0, got {self.gpus_per_node!r}")

    def environment(self) -> dict[str, str]:
        """Variables a pilot job exports before `nerschat serve` (values may hold `$VARS`)."""
        env: dict[str, str] = {}
        if self.hf_home:
            env["HF_HOME"] = self.hf_home
        if self.offline:
            env["HF_HUB_OFFLINE"] = "1"
        env.update(self.env)
        return env

    def pilot_options(self) -> dict[str, Any]:
        """Keyword arguments for `PilotConfig` / `PilotGroup` (workflow mode): no image."""
        options: dict[str, Any] = {"runtime": self.runtime}
        if self.modules and self.runtime != "none":
            options["runtime_modules"] = self.modules
        if self.hf_home:
            options["options"] = {"hf_cache": os.path.expandvars(self.hf_home)}
        return options


@dataclass(frozen=True)
class JobRequest:
    """What one service-mode pilot job asks the site's provider for.

    `None` means the site's default (or its environment variable). `gpus` is per node;
    `image` is the container image of the job's pilots when they all share one (a site may
    stage it at allocation, e.g. Shifter's `#SBATCH --image=`).
    """

    gpus: int = 0
    image: str | None = None
    account: str | None = None
    qos: str | None = None
    walltime: str | None = None
    constraint: str | None = None
    partition: str | None = None


class SiteConfig(Protocol):
    """The contract a site config module fulfils (see the module docstring)."""

    def make_config(self) -> Config:
        """Workflow mode: a Config with the `pilots` and `clients` executors."""
        ...

    def site(self, engine: str) -> Site:
        """Facts about where pilots of `engine` run (never an image)."""
        ...

    def pilot_provider(self, request: JobRequest) -> ExecutionProvider:
        """The provider (and launcher) that submits one service-mode pilot job."""
        ...


def setting(value: Any, name: str, env: str, default: Any = None, *, required: bool = False) -> Any:
    """An argument, else its environment variable, else a default; errors name both."""
    if value is None:
        value = os.environ.get(env, default)
    if required and value in (None, ""):
        raise ConfigError(f"{name} is required: pass {name}=... or set ${env}")
    return value


def activate_env_command(prefix: str | None = None) -> str:
    """Shell line that puts this Python environment first on PATH on the workers.

    Parsl starts `process_worker_pool.py` (and imports nerschat) through PATH, so workers
    must see the same environment as the driver.
    """
    prefix = prefix or sys.prefix
    activate = Path(prefix) / "bin" / "activate"
    if activate.exists():
        return f"source {shlex.quote(str(activate))}"
    return f"export PATH={shlex.quote(str(Path(prefix) / 'bin'))}:$PATH"


def load_site(spec: str | os.PathLike[str]) -> ModuleType:
    """A site config by name (`local`, `slurm`, `perlmutter`: packaged) or by file path.

    A name is imported from `nerschat.sites`, so it works outside a source checkout; anything
    holding a path separator or ending in `.py` is loaded as a file (`load_config_module`).
    ConfigError naming the choices for an unknown name.
    """
    from nerschat.sites import SITES

    text = os.fspath(spec)
    if text.endswith(".py") or os.sep in text or (os.altsep and os.altsep in text):
        return load_config_module(text)
    if text not in SITES:
        raise ConfigError(f"unknown site {text!r}: choose {', '.join(SITES)} or pass the path "
                          "of a site config file (e.g. ./my_site.py)")
    module = importlib.import_module(f"nerschat.sites.{text}")
    ensure_env_on_path()
    return module


def load_config_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a config file (e.g. a copy of nerschat/sites/local.py) defining `make_config()`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Parsl config file {path} not found")
    spec = importlib.util.spec_from_file_location(f"nerschat_parsl_config_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ensure_env_on_path()
    if not callable(getattr(module, "make_config", None)):
        raise ConfigError(f"{path}: defines no make_config() function")
    return module


def site_of(module: ModuleType, engine: str) -> Site:
    """The `Site` a config module gives for `engine`; ConfigError if it gives none."""
    function = getattr(module, "site", None)
    if not callable(function):
        raise ConfigError(f"{module.__file__}: defines no site(engine) function")
    site = function(engine)
    if not isinstance(site, Site):
        raise ConfigError(f"{module.__file__}: site({engine!r}) returned {type(site).__name__}, "
                          "not nerschat.parsl.config.Site")
    return site


def pilot_provider_of(module: ModuleType, request: JobRequest) -> ExecutionProvider:
    """The provider a config module submits service-mode pilot jobs with."""
    function = getattr(module, "pilot_provider", None)
    if not callable(function):
        raise ConfigError(f"{module.__file__}: defines no pilot_provider(request) function, "
                          "so it cannot launch service-mode pilots")
    provider: ExecutionProvider = function(request)
    return provider


def pilot_options_of(module: ModuleType, engine: str = "vllm") -> dict[str, Any]:
    """Site defaults for pilots of `engine` (runtime, model cache): kwargs for `PilotGroup`.

    Images are not among them: the pilot takes the engine recipe's pinned image.
    A module without `site()` gives `{}`.
    """
    if not callable(getattr(module, "site", None)):
        return {}
    return site_of(module, engine).pilot_options()


def ensure_env_on_path() -> None:
    """Parsl's driver starts `interchange.py` through PATH: put this env's bin first."""
    bin_dir = str(Path(sys.prefix) / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@contextlib.contextmanager
def parsl_session(config_path: str | os.PathLike[str] | None) -> Iterator[ModuleType | None]:
    """Load a config (a site name or a file, see `load_site`), yield its module, clean up after it.

    With None, whatever config the caller loaded is used and left alone.
    """
    if config_path is None:
        yield None
        return
    import parsl

    module = load_site(config_path)
    dfk = parsl.load(module.make_config())
    try:
        yield module
    finally:
        dfk.cleanup()
        parsl.clear()


def add_pilot_arguments(parser: argparse.ArgumentParser, *, model: str) -> None:
    """The arguments every pipeline script in `pipelines/` takes to run its pilots.

    `input`, `-o/--output`, `--config` (a site name or a Parsl config file), `--engine`, `--model`
    (default `model`), `--pilots` (servers to start), `--registry` (default
    `$NERSCHAT_REGISTRY`) and `--ready-timeout` (seconds for the pilots to become ready).
    """
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--config", default="local")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--model", default=model)
    parser.add_argument("--pilots", type=int, default=1, help="servers to start")
    parser.add_argument("--registry", default=os.environ.get("NERSCHAT_REGISTRY"))
    parser.add_argument("--ready-timeout", type=float, default=900.0)
