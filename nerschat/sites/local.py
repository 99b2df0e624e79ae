"""Parsl config for one machine without SLURM (a laptop, a login node, the README's main job).

Two labelled executors, as in the cluster configs, so workflows run unchanged:
- `pilots`: long-running pilot apps (one worker per server),
- `clients`: client apps (judge/embed shards).

`pilot_provider(request)` runs `nerschat launch --site local` pilots as local background
processes. Copy this file and edit it, or call `make_config(...)` with other values.
"""

from __future__ import annotations

import os

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SimpleLauncher
from parsl.providers import LocalProvider

from nerschat.parsl.config import (
    CLIENT_EXECUTOR,
    PILOT_EXECUTOR,
    JobRequest,
    Site,
    activate_env_command,
)


def site(engine: str) -> Site:
    """No container: the local engine runs directly (see scripts/setup-local-engine.sh)."""
    return Site(name="local", runtime="none", hf_home=os.environ.get("HF_HOME") or None,
                offline=True, cluster=False)


def pilot_provider(request: JobRequest) -> LocalProvider:
    """Pilot jobs as background processes of this machine (they outlive `nerschat launch`)."""
    return LocalProvider(init_blocks=0, min_blocks=0, max_blocks=1,
                         worker_init=activate_env_command(), launcher=SimpleLauncher())


def make_config(pilot_workers: int = 2, client_workers: int = 2, run_dir: str = "runinfo",
                worker_init: str | None = None) -> Config:
    """Workflow mode on this machine: `pilots` and `clients` HTEX executors on LocalProvider.

    `pilot_workers` / `client_workers`: workers (concurrent apps) per executor; `run_dir`:
    Parsl's run directory; `worker_init`: shell line activating nerschat's environment
    (default: this Python's).
    """
    worker_init = worker_init if worker_init is not None else activate_env_command()

    def executor(label: str, workers: int) -> HighThroughputExecutor:
        return HighThroughputExecutor(
            label=label,
            address="127.0.0.1",
            max_workers_per_node=workers,
            cores_per_worker=0.01,  # pilots and clients mostly wait on I/O
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                                   worker_init=worker_init),
        )

    return Config(
        executors=[executor(PILOT_EXECUTOR, pilot_workers),
                   executor(CLIENT_EXECUTOR, client_workers)],
        run_dir=run_dir,
        strategy_period=1,
    )
