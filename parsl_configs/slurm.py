"""Parsl config for a generic SLURM cluster (and the local test cluster of scripts/local-slurm.sh).

- `pilots`: one SLURM job per block with `gpus_per_node` GPUs; Parsl gives each worker one
  GPU (`available_accelerators`), so one pilot runs per GPU. With `tensor_parallel=True`
  one worker gets all of the node's GPUs instead.
- `clients`: CPU jobs for client apps.

Every argument falls back to an environment variable (NERSCHAT_SLURM_*), so the same file
serves several sites. Copy and edit it for anything more specific.
"""

from __future__ import annotations

from typing import Any

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher, SrunLauncher
from parsl.providers import SlurmProvider

from nerschat.parsl.config import (
    CLIENT_EXECUTOR,
    PILOT_EXECUTOR,
    activate_env_command,
    setting,
)


def make_config(partition: str | None = None, account: str | None = None,
                qos: str | None = None, walltime: str | None = None,
                gpus_per_node: int | None = None, tensor_parallel: bool = False,
                pilot_blocks: int = 1, client_workers: int = 2, cores_per_node: int | None = None,
                launcher: str | None = None, address: str | None = None,
                worker_init: str | None = None, run_dir: str = "runinfo") -> Config:
    partition = setting(partition, "partition", "NERSCHAT_SLURM_PARTITION")
    account = setting(account, "account", "NERSCHAT_SLURM_ACCOUNT")
    qos = setting(qos, "qos", "NERSCHAT_SLURM_QOS")
    walltime = setting(walltime, "walltime", "NERSCHAT_SLURM_WALLTIME", "00:30:00")
    gpus = int(setting(gpus_per_node, "gpus_per_node", "NERSCHAT_SLURM_GPUS_PER_NODE", 0))
    cores = setting(cores_per_node, "cores_per_node", "NERSCHAT_SLURM_CORES_PER_NODE", 1)
    launcher_name = setting(launcher, "launcher", "NERSCHAT_SLURM_LAUNCHER", "single")
    if launcher_name not in ("single", "srun"):
        raise ValueError(f"launcher must be 'single' or 'srun', got {launcher_name!r}")
    worker_init = worker_init if worker_init is not None else activate_env_command()

    def provider(gpu_count: int, blocks: int) -> SlurmProvider:
        return SlurmProvider(
            partition=partition, account=account, qos=qos, walltime=walltime,
            nodes_per_block=1, init_blocks=blocks, min_blocks=0, max_blocks=blocks,
            gpus_per_node=gpu_count or None, cores_per_node=int(cores),
            exclusive=False, worker_init=worker_init,
            launcher=SrunLauncher() if launcher_name == "srun" else SingleNodeLauncher(),
        )

    if gpus and tensor_parallel:
        accelerators: int | list[str] = [",".join(str(i) for i in range(gpus))]
    else:
        accelerators = gpus
    pilots = HighThroughputExecutor(
        label=PILOT_EXECUTOR, address=address or "127.0.0.1",
        available_accelerators=accelerators or (),
        max_workers_per_node=None if gpus else 1, cores_per_worker=0.01,
        provider=provider(gpus, pilot_blocks),
    )
    clients = HighThroughputExecutor(
        label=CLIENT_EXECUTOR, address=address or "127.0.0.1",
        max_workers_per_node=client_workers, cores_per_worker=0.01,
        provider=provider(0, 1),
    )
    return Config(executors=[pilots, clients], run_dir=run_dir, strategy_period=1)


def pilot_options() -> dict[str, Any]:
    return {"runtime": setting(None, "runtime", "NERSCHAT_RUNTIME", "none")}
