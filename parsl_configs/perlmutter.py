"""Parsl config for NERSC Perlmutter: GPU pilot nodes plus CPU client nodes.

- `pilots`: `-C gpu` nodes (4x A100 each). By default one vLLM/TEI server per GPU
  (`available_accelerators=4`); `tensor_parallel=True` gives one server all four GPUs.
  Pilots run the pinned image under Shifter (see `pilot_options()`).
- `clients`: `-C cpu` nodes for judge/embed shards, many workers per node.

Nodes reach each other by `nid` hostname on the high-speed network (hsn0).

Required: `account` (or $NERSCHAT_ACCOUNT) and `env_path` (or $NERSCHAT_ENV: a venv or conda
env on a shared file system with nerschat installed, activated on every worker).
Copy this file to tune walltimes, node counts and QOS for your allocation.
"""

from __future__ import annotations

import os
from typing import Any

from parsl.addresses import address_by_interface
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SrunLauncher
from parsl.providers import SlurmProvider

from nerschat.parsl.config import CLIENT_EXECUTOR, PILOT_EXECUTOR, setting
from nerschat.pilot.engines.tei import TEI_IMAGE
from nerschat.pilot.engines.vllm import VLLM_IMAGE

GPUS_PER_NODE = 4
CORES_PER_GPU_NODE = 64


def make_config(account: str | None = None, env_path: str | None = None,
                qos: str | None = None, walltime: str | None = None, gpu_nodes: int = 1,
                tensor_parallel: bool = False, client_nodes: int = 1,
                client_workers: int = 32, client_walltime: str | None = None,
                hbm80g: bool = False, run_dir: str = "runinfo") -> Config:
    account = setting(account, "account", "NERSCHAT_ACCOUNT", required=True)
    env_path = setting(env_path, "env_path", "NERSCHAT_ENV", required=True)
    qos = setting(qos, "qos", "NERSCHAT_QOS", "regular")
    walltime = setting(walltime, "walltime", "NERSCHAT_WALLTIME", "01:00:00")
    client_walltime = client_walltime or walltime
    registry = os.environ.get("NERSCHAT_REGISTRY", "$HOME/.nerschat/registry")
    worker_init = "\n".join([
        "module load python",
        f"source {env_path}/bin/activate 2>/dev/null || conda activate {env_path}",
        f"export NERSCHAT_REGISTRY={registry}",
        "export HF_HOME=${HF_HOME:-$SCRATCH/huggingface} HF_HUB_OFFLINE=1",
    ])
    gpu_constraint = "gpu&hbm80g" if hbm80g else "gpu"
    accelerators: int | list[str] = (
        [",".join(str(i) for i in range(GPUS_PER_NODE))] if tensor_parallel else GPUS_PER_NODE
    )
    pilots = HighThroughputExecutor(
        label=PILOT_EXECUTOR,
        address=address_by_interface("hsn0"),
        available_accelerators=accelerators,
        cores_per_worker=CORES_PER_GPU_NODE // (1 if tensor_parallel else GPUS_PER_NODE),
        provider=SlurmProvider(
            account=account, qos=qos, constraint=gpu_constraint, walltime=walltime,
            nodes_per_block=1, init_blocks=gpu_nodes, min_blocks=0, max_blocks=gpu_nodes,
            gpus_per_node=GPUS_PER_NODE, exclusive=True, worker_init=worker_init,
            launcher=SrunLauncher(overrides=f"--gpus-per-node {GPUS_PER_NODE} -c 128"),
        ),
    )
    clients = HighThroughputExecutor(
        label=CLIENT_EXECUTOR,
        address=address_by_interface("hsn0"),
        max_workers_per_node=client_workers,
        cores_per_worker=1,
        provider=SlurmProvider(
            account=account, qos=qos, constraint="cpu", walltime=client_walltime,
            nodes_per_block=1, init_blocks=client_nodes, min_blocks=0, max_blocks=client_nodes,
            exclusive=True, worker_init=worker_init, launcher=SrunLauncher(),
        ),
    )
    return Config(executors=[pilots, clients], run_dir=run_dir, strategy_period=5)


def pilot_options(engine: str = "vllm") -> dict[str, Any]:
    """Pilots on Perlmutter run the pinned image under Shifter with models on $SCRATCH."""
    image = os.environ.get("NERSCHAT_IMAGE") or (TEI_IMAGE if engine == "tei" else VLLM_IMAGE)
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("SCRATCH", "~"),
                                                        "huggingface")
    return {"runtime": "shifter", "image": image, "options": {"hf_cache": hf_home}}
