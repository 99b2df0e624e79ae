"""Parsl config for a generic SLURM cluster (and the local test cluster of scripts/local-slurm.sh).

- `pilots`: one SLURM job per block with `gpus_per_node` GPUs; Parsl gives each worker one
  GPU (`available_accelerators`), so one pilot runs per GPU. With `tensor_parallel=True`
  one worker gets all of the node's GPUs instead.
- `clients`: CPU jobs for client apps.
- `pilot_provider(request)`: the pilot provider for `nerschat launch --site slurm`.

Every argument falls back to one environment variable: $NERSCHAT_PARTITION,
$NERSCHAT_ACCOUNT, $NERSCHAT_QOS, $NERSCHAT_WALLTIME, $NERSCHAT_GPUS_PER_NODE,
$NERSCHAT_CORES_PER_NODE, $NERSCHAT_LAUNCHER (`single` or `srun`), $NERSCHAT_RUNTIME (the
container runtime, default `none`), $NERSCHAT_RUNTIME_MODULES (its modules, e.g. Shifter's
`gpu,nccl-plugin`) and $HF_HOME (the model cache). Copy and edit it for
anything more specific.
"""

from __future__ import annotations

import os

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SingleNodeLauncher, SrunLauncher
from parsl.providers import SlurmProvider

from nerschat.parsl.config import (
    CLIENT_EXECUTOR,
    PILOT_EXECUTOR,
    ConfigError,
    JobRequest,
    Site,
    activate_env_command,
    check_renamed_env,
    setting,
    walltime_setting,
)

# sbatch/squeue/sacct on a busy login node can take well over Parsl's default 10 s.
CMD_TIMEOUT = 120


def _int_setting(value: int | None, name: str, env: str, default: int) -> int:
    raw = setting(value, name, env, default)
    try:
        number = int(raw)
    except (TypeError, ValueError):
        number = -1
    if number < 0:
        raise ConfigError(f"{name} {raw!r} is not an integer >= 0 (argument or ${env})")
    return number


def _gpus_per_node(value: int | None = None) -> int:
    return _int_setting(value, "gpus_per_node", "NERSCHAT_GPUS_PER_NODE", 0)


def site(engine: str) -> Site:
    """Pilots run with $NERSCHAT_RUNTIME (default none), models from $HF_HOME.

    The runtime loads the modules in $NERSCHAT_RUNTIME_MODULES (comma-separated, e.g.
    `gpu,nccl-plugin` for Shifter; default none).
    """
    modules = setting(None, "runtime_modules", "NERSCHAT_RUNTIME_MODULES", "")
    return Site(
        name="slurm", runtime=setting(None, "runtime", "NERSCHAT_RUNTIME", "none"),
        modules=tuple(m.strip() for m in modules.split(",") if m.strip()),
        hf_home=os.environ.get("HF_HOME") or None, offline=True,
        gpus_per_node=_gpus_per_node(), cluster=True,
    )


def _provider(gpu_count: int, blocks: int, *, partition: str | None, account: str | None,
              qos: str | None, walltime: str, cores: int, launcher_name: str,
              worker_init: str, constraint: str | None = None) -> SlurmProvider:
    if launcher_name not in ("single", "srun"):
        raise ConfigError(f"launcher must be 'single' or 'srun', got {launcher_name!r} "
                          "(argument or $NERSCHAT_LAUNCHER)")
    return SlurmProvider(
        partition=partition, account=account, qos=qos, constraint=constraint,
        walltime=walltime, nodes_per_block=1, init_blocks=blocks, min_blocks=0,
        max_blocks=blocks, gpus_per_node=gpu_count or None, cores_per_node=cores,
        exclusive=False, worker_init=worker_init, cmd_timeout=CMD_TIMEOUT,
        launcher=(SrunLauncher(overrides=f"-c {cores}") if launcher_name == "srun"
                  else SingleNodeLauncher()),
    )


def pilot_provider(request: JobRequest) -> SlurmProvider:
    """One node per block with `request.gpus` GPUs (none for engines that need none)."""
    check_renamed_env()
    return _provider(
        request.gpus, 1,
        partition=setting(request.partition, "partition", "NERSCHAT_PARTITION"),
        account=setting(request.account, "account", "NERSCHAT_ACCOUNT"),
        qos=setting(request.qos, "qos", "NERSCHAT_QOS"),
        walltime=walltime_setting(request.walltime, "00:30:00"),
        cores=_int_setting(None, "cores_per_node", "NERSCHAT_CORES_PER_NODE", 1),
        launcher_name=setting(None, "launcher", "NERSCHAT_LAUNCHER", "single"),
        worker_init=activate_env_command(), constraint=request.constraint,
    )


def make_config(partition: str | None = None, account: str | None = None,
                qos: str | None = None, walltime: str | None = None,
                gpus_per_node: int | None = None, tensor_parallel: bool = False,
                pilot_blocks: int = 1, client_workers: int = 2, cores_per_node: int | None = None,
                launcher: str | None = None, address: str | None = None,
                worker_init: str | None = None, run_dir: str = "runinfo") -> Config:
    """Workflow mode on a generic SLURM cluster: `pilots` and `clients` executors.

    Every argument falls back to its environment variable (module docstring); `gpus_per_node`
    0 means CPU-only pilot blocks; `pilot_blocks`: pilot jobs; `address`: where workers reach
    the interchange (default 127.0.0.1, the single-node test cluster).
    """
    check_renamed_env()
    gpus = _gpus_per_node(gpus_per_node)
    common = dict(
        partition=setting(partition, "partition", "NERSCHAT_PARTITION"),
        account=setting(account, "account", "NERSCHAT_ACCOUNT"),
        qos=setting(qos, "qos", "NERSCHAT_QOS"),
        walltime=walltime_setting(walltime, "00:30:00"),
        cores=_int_setting(cores_per_node, "cores_per_node", "NERSCHAT_CORES_PER_NODE", 1),
        launcher_name=setting(launcher, "launcher", "NERSCHAT_LAUNCHER", "single"),
        worker_init=worker_init if worker_init is not None else activate_env_command(),
    )
    if gpus and tensor_parallel:
        accelerators: int | list[str] = [",".join(str(i) for i in range(gpus))]
    else:
        accelerators = gpus
    pilots = HighThroughputExecutor(
        label=PILOT_EXECUTOR, address=address or "127.0.0.1",
        available_accelerators=accelerators or (),
        max_workers_per_node=None if gpus else 1, cores_per_worker=0.01,
        provider=_provider(gpus, pilot_blocks, **common),
    )
    clients = HighThroughputExecutor(
        label=CLIENT_EXECUTOR, address=address or "127.0.0.1",
        max_workers_per_node=client_workers, cores_per_worker=0.01,
        provider=_provider(0, 1, **common),
    )
    return Config(executors=[pilots, clients], run_dir=run_dir, strategy_period=1)
