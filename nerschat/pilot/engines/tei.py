"""Hugging Face Text Embeddings Inference (production embeddings on GPUs)."""

from __future__ import annotations

import os

from nerschat.engine_metrics import TEI_METRICS
from nerschat.pilot.engines.base import (
    EngineError,
    LaunchRequest,
    ServerLaunch,
    check_options,
    option_int,
)

# The A100 (compute capability 8.0) build, pinned to a patch release; Hopper and Ada
# builds have other tags.
TEI_IMAGE = "ghcr.io/huggingface/text-embeddings-inference:1.9.3"
TEI_OPTIONS = {
    "max_client_batch_size", "max_batch_tokens", "max_concurrent_requests", "auto_truncate",
    "default_prompt_name", "dtype", "hf_cache",
}


class TeiRecipe:
    """TEI: one model on one GPU; the API key protects `/info` and `/embed`."""

    name: str = "tei"
    default_image: str | None = TEI_IMAGE

    def launch(self, request: LaunchRequest) -> ServerLaunch:
        """The server command for `request`; EngineError for what this engine cannot do."""
        check_options(self.name, request.options, TEI_OPTIONS)
        if request.kind not in (None, "embedding"):
            raise EngineError("engine 'tei' serves embeddings only (kind 'embedding')")
        if len(request.gpus) > 1:
            raise EngineError(
                f"TEI serves one model on one GPU per process; got GPUs {','.join(request.gpus)}: "
                "start one pilot per GPU"
            )
        opts = request.options
        hf_home = opts.get("hf_cache") or os.environ.get("HF_HOME") or os.path.expanduser(
            "~/.cache/huggingface"
        )
        # Inside Shifter the image's ENV wins, so port, hostname and cache go on the argv.
        argv = [
            "text-embeddings-router",
            "--model-id", request.model,
            "--port", str(request.port),
            "--hostname", "0.0.0.0",
            "--huggingface-hub-cache", os.path.join(hf_home, "hub"),
        ]
        if request.served_name:
            argv += ["--served-model-name", request.served_name]
        for name in ("max_client_batch_size", "max_batch_tokens", "max_concurrent_requests"):
            value = option_int(opts, name)
            if value is not None:
                argv += [f"--{name.replace('_', '-')}", str(value)]
        if opts.get("dtype"):
            argv += ["--dtype", str(opts["dtype"])]
        if str(opts.get("auto_truncate", "")).lower() in ("1", "true", "yes"):
            argv.append("--auto-truncate")
        if opts.get("default_prompt_name"):
            argv += ["--default-prompt-name", str(opts["default_prompt_name"])]
        argv += list(request.extra_args)
        env = {"HF_HOME": hf_home, "HF_HUB_OFFLINE": "1"}
        if request.gpus:
            env["CUDA_VISIBLE_DEVICES"] = request.gpus[0]
        return ServerLaunch(
            argv=argv,
            env=env,
            secret_env={"API_KEY": request.api_key},
            kind="embedding",
            served_model=request.served_name or request.model,
            auth_path="/info",  # TEI's /v1/models is not guaranteed; /info needs the key
            # The HTTP build serves Prometheus text on its API port; its queue is te_queue_size
            # (requests in a running batch are finished by TEI's own graceful shutdown).
            metrics_path="/metrics",
            metrics=TEI_METRICS,
            capacity=option_int(opts, "max_concurrent_requests") or 512,
        )
