"""Helpers shared by the Parsl configs in `parsl_configs/` and by `--config FILE` loading."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from nerschat.errors import UsageError

PILOT_EXECUTOR = "pilots"
CLIENT_EXECUTOR = "clients"


class ConfigError(UsageError, ValueError):
    """A Parsl config that cannot be built: names the missing argument and its env var."""


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


def load_config_module(path: str | os.PathLike[str]) -> ModuleType:
    """Import a config file (e.g. parsl_configs/local.py) that defines `make_config()`."""
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


def pilot_options_of(module: ModuleType) -> dict[str, Any]:
    """Site defaults for pilots (runtime, image, ...) a config module may provide."""
    options = getattr(module, "pilot_options", None)
    return dict(options()) if callable(options) else {}


def ensure_env_on_path() -> None:
    """Parsl's driver starts `interchange.py` through PATH: put this env's bin first."""
    bin_dir = str(Path(sys.prefix) / "bin")
    if os.environ.get("PATH", "").split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


@contextlib.contextmanager
def parsl_session(config_path: str | os.PathLike[str] | None) -> Iterator[ModuleType | None]:
    """Load a config file for the block, yield its module, clean up after it.

    With None, whatever config the caller loaded is used and left alone.
    """
    if config_path is None:
        yield None
        return
    import parsl

    module = load_config_module(config_path)
    dfk = parsl.load(module.make_config())
    try:
        yield module
    finally:
        dfk.cleanup()
        parsl.clear()
