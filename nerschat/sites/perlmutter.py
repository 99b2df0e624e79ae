"""Parsl config for NERSC Perlmutter: GPU pilot nodes plus CPU client nodes.

- `pilots`: `-C gpu` nodes (4x A100 each). By default one vLLM/TEI server per GPU
  (`available_accelerators=4`); `tensor_parallel=True` gives one server all four GPUs.
  Pilots run the engine recipe's pinned image under Shifter (`site(engine)`).
- `clients`: `-C cpu` nodes for judge/embed shards, many workers per node, submitted only
  when client tasks exist (`init_blocks=0`): CPU nodes are not billed while GPU pilots queue.
- `pilot_provider(request)`: the same GPU provider for `nerschat launch --site perlmutter`.

Nodes reach each other by `nid` hostname on the high-speed network (hsn0).

Required: `account` (or $NERSCHAT_ACCOUNT; GPU allocations may carry a `_g` suffix: check
Iris) and `env_path` (or $NERSCHAT_ENV: a venv on a shared file system with nerschat
installed, activated on every node). Optional: $NERSCHAT_QOS (default `regular`),
$NERSCHAT_WALLTIME (default 01:00:00), $HF_HOME (default `$SCRATCH/huggingface`).
Copy this file to tune walltimes, node counts and QOS for your allocation.
"""

from __future__ import annotations

import os
import shlex

from parsl.addresses import address_by_interface
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SrunLauncher
from parsl.providers import SlurmProvider

from nerschat.parsl.config import (
    CLIENT_EXECUTOR,
    PILOT_EXECUTOR,
    ConfigError,
    JobRequest,
    Site,
    check_renamed_env,
    normalize_walltime,
    setting,
    walltime_setting,
)

GPUS_PER_NODE = 4
# Shifter modules of every pilot (`shifter --module=gpu,nccl-plugin`, as NERSC's own tools use):
# `gpu` maps the driver and CUDA libraries in, `nccl-plugin` the Slingshot NCCL plugin for
# anything that crosses nodes (harmless inside one).
SHIFTER_MODULES = ("gpu", "nccl-plugin")
CPUS_PER_GPU_NODE = 128  # hardware threads: 64 cores x 2
CPUS_PER_CPU_NODE = 256  # hardware threads: 128 cores x 2
CPUS_PER_GPU_SHARED = 32  # what the `shared` QOS gives per GPU (NERSC's own tool asks for it)
QOS = ("regular", "debug", "shared", "preempt", "premium", "overrun", "realtime")
DEBUG_MAX_SECONDS = 30 * 60
SHARED_MAX_GPUS = 2
# sbatch/squeue/sacct on a busy login node can take well over Parsl's default 10 s.
CMD_TIMEOUT = 120


def _hf_home() -> str:
    return os.environ.get("HF_HOME") or "$SCRATCH/huggingface"


def _worker_init(env_path: str | None = None) -> str:
    """Activate the nerschat venv on the node, or stop the job with a clear message."""
    env_path = setting(env_path, "env_path", "NERSCHAT_ENV", required=True)
    env = shlex.quote(env_path)
    registry = os.environ.get("NERSCHAT_REGISTRY", "$HOME/.nerschat/registry")
    return "\n".join([
        "module load python",
        f"if [ -f {env}/bin/activate ]; then source {env}/bin/activate; "
        f"else export PATH={env}/bin:$PATH; fi",
        "command -v nerschat >/dev/null || { echo \"nerschat not found in "
        f"{env_path} (NERSCHAT_ENV): install it there\" >&2; exit 1; }}",
        f"export NERSCHAT_REGISTRY={registry}",
        *(f'export {k}="{v}"' for k, v in site("vllm").environment().items()),
        # Off $HOME (40 GB quota). `nerschat launch` gives each model and GPU slot its own.
        'export VLLM_CACHE_ROOT="${VLLM_CACHE_ROOT:-$SCRATCH/cache_vllm/parsl}"',
    ])


def site(engine: str) -> Site:
    """Pilots on Perlmutter: Shifter with the GPU and NCCL modules, caches on $SCRATCH.

    Models are read from `$HF_HOME` (default `$SCRATCH/huggingface`; `$HOME` has a 40 GB
    quota) with `HF_HUB_OFFLINE=1`: download them once on a login node before launching.
    """
    env = {"TVM_FFI_CACHE_DIR": "$SCRATCH/cache_tvm_ffi"} if engine == "vllm" else {}
    return Site(
        name="perlmutter", runtime="shifter", modules=SHIFTER_MODULES,
        hf_home=_hf_home(), offline=True, env=env, gpus_per_node=GPUS_PER_NODE, cluster=True,
        python_env=os.environ.get("NERSCHAT_ENV") or None,
        compile_cache="$SCRATCH/cache_vllm" if engine == "vllm" else None,
    )


def gpus_per_job(qos: str | None) -> int:
    """GPUs one launched job may hold: a node's 4, or 2 on the `shared` QOS."""
    qos = setting(qos, "qos", "NERSCHAT_QOS", "regular")
    return SHARED_MAX_GPUS if qos == "shared" else GPUS_PER_NODE


def check_request(request: JobRequest, qos: str, walltime_s: int) -> None:
    """Refuse what Perlmutter's queues refuse, before anything waits in them."""
    if qos not in QOS:
        raise ConfigError(f"QOS {qos!r} is not a Perlmutter QOS ({', '.join(QOS)}): "
                          "pass --qos regular (or debug, shared, ...)")
    if qos == "debug" and walltime_s > DEBUG_MAX_SECONDS:
        raise ConfigError("the debug QOS allows at most 00:30:00: pass --walltime 00:30:00 "
                          "or --qos regular")
    if qos == "shared" and request.gpus > SHARED_MAX_GPUS:
        raise ConfigError(f"the shared QOS gives at most {SHARED_MAX_GPUS} GPUs per job, asked "
                          f"{request.gpus}: use --qos regular or fewer GPUs per job")


def pilot_provider(request: JobRequest) -> SlurmProvider:
    """One GPU node per block; exclusive unless the `shared` QOS (then 32 CPUs per GPU)."""
    from nerschat.parsl.config import walltime_seconds

    check_renamed_env()
    account = setting(request.account, "account", "NERSCHAT_ACCOUNT", required=True)
    qos = setting(request.qos, "qos", "NERSCHAT_QOS", "regular")
    walltime = walltime_setting(request.walltime, "01:00:00")
    gpus = request.gpus or GPUS_PER_NODE
    check_request(JobRequest(gpus=gpus), qos, walltime_seconds(walltime))
    shared = qos == "shared"
    cpus = CPUS_PER_GPU_SHARED * gpus if shared else CPUS_PER_GPU_NODE
    # Shifter stages the image at allocation and loads the modules for the job's steps
    # (NERSC's form: `#SBATCH --image=docker:REPO:TAG`).
    staging = ""
    if request.image:
        image = request.image if ":" in request.image.split("/")[0] else f"docker:{request.image}"
        modules = ",".join(site("vllm").modules)
        staging = f"#SBATCH --image={image}\n#SBATCH --module={modules}"
    return SlurmProvider(
        scheduler_options=staging,
        account=account, qos=qos, constraint=request.constraint or "gpu", walltime=walltime,
        nodes_per_block=1, init_blocks=1, min_blocks=0, max_blocks=1, gpus_per_node=gpus,
        cores_per_node=cpus if shared else None, exclusive=not shared,
        worker_init=_worker_init(), cmd_timeout=CMD_TIMEOUT,
        # SLURM >= 22.05 no longer passes --cpus-per-task from sbatch to srun: say it again.
        launcher=SrunLauncher(overrides=f"--gpus-per-node {gpus} -c {cpus}"),
    )


def make_config(account: str | None = None, env_path: str | None = None,
                qos: str | None = None, walltime: str | None = None, gpu_nodes: int = 1,
                tensor_parallel: bool = False, client_nodes: int = 1,
                client_workers: int = 32, client_walltime: str | None = None,
                hbm80g: bool = False, run_dir: str = "runinfo") -> Config:
    """Workflow mode on Perlmutter: GPU `pilots` blocks and CPU `clients` blocks.

    `account` ($NERSCHAT_ACCOUNT) and `env_path` ($NERSCHAT_ENV) are required (ConfigError
    naming the variable otherwise); `qos`, `walltime` (HH:MM:SS) default as in the module
    docstring. `gpu_nodes` / `client_nodes`: most blocks of each; `tensor_parallel`: one
    pilot per node with all 4 GPUs; `client_workers`: workers per CPU node; `hbm80g`: the
    80 GB A100 nodes.
    """
    check_renamed_env()
    account = setting(account, "account", "NERSCHAT_ACCOUNT", required=True)
    worker_init = _worker_init(env_path)
    qos = setting(qos, "qos", "NERSCHAT_QOS", "regular")
    walltime = walltime_setting(walltime, "01:00:00")
    client_walltime = normalize_walltime(client_walltime or walltime)
    gpu_constraint = "gpu&hbm80g" if hbm80g else "gpu"
    accelerators: int | list[str] = (
        [",".join(str(i) for i in range(GPUS_PER_NODE))] if tensor_parallel else GPUS_PER_NODE
    )
    pilots = HighThroughputExecutor(
        label=PILOT_EXECUTOR,
        address=address_by_interface("hsn0"),
        available_accelerators=accelerators,
        cores_per_worker=CPUS_PER_GPU_NODE // (1 if tensor_parallel else GPUS_PER_NODE),
        provider=SlurmProvider(
            account=account, qos=qos, constraint=gpu_constraint, walltime=walltime,
            nodes_per_block=1, init_blocks=gpu_nodes, min_blocks=0, max_blocks=gpu_nodes,
            gpus_per_node=GPUS_PER_NODE, exclusive=True, worker_init=worker_init,
            cmd_timeout=CMD_TIMEOUT,
            launcher=SrunLauncher(overrides=f"--gpus-per-node {GPUS_PER_NODE} "
                                            f"-c {CPUS_PER_GPU_NODE}"),
        ),
    )
    clients = HighThroughputExecutor(
        label=CLIENT_EXECUTOR,
        address=address_by_interface("hsn0"),
        max_workers_per_node=client_workers,
        cores_per_worker=1,
        provider=SlurmProvider(
            account=account, qos=qos, constraint="cpu", walltime=client_walltime,
            nodes_per_block=1, init_blocks=0, min_blocks=0, max_blocks=client_nodes,
            exclusive=True, worker_init=worker_init, cmd_timeout=CMD_TIMEOUT,
            # Without -c the srun step gets one CPU and all workers share it.
            launcher=SrunLauncher(overrides=f"-c {CPUS_PER_CPU_NODE}"),
        ),
    )
    return Config(executors=[pilots, clients], run_dir=run_dir, strategy_period=5)
