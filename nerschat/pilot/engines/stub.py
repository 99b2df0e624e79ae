"""The stub engine: nerschat's own stand-in server, for fault injection and benchmarks."""

from __future__ import annotations

import sys

from nerschat.engine_metrics import TEI_METRICS, VLLM_METRICS
from nerschat.pilot.engines.base import LaunchRequest, ServerLaunch, check_options, option_int
from nerschat.pilot.engines.vllm import vllm_launch

STUB_OPTIONS = {
    "latency", "capacity", "startup_delay", "fail_after", "error_every", "error_status",
    "hang_after", "slow_factor", "chunk_delay", "api", "dim", "max_client_batch_size", "max_input_length", "max_model_len", "tokens_per_second",
    "capacity_unit", "check_context",
}


class StubRecipe:
    """The stub server: every fault knob of `nerschat.testing.stub_server` is an option."""

    name: str = "stub"
    default_image: str | None = None

    def launch(self, request: LaunchRequest) -> ServerLaunch:
        """The server command for `request`; EngineError for what this engine cannot do."""
        check_options(self.name, request.options, STUB_OPTIONS)
        kind = request.kind or "llm"
        served = request.served_name or request.model
        argv = [
            sys.executable, "-m", "nerschat.testing.stub_server",
            "--host", "0.0.0.0", "--port", str(request.port),
            "--model", served, "--kind", kind,
        ]
        for name in sorted(request.options):
            value = request.options[name]
            if value is None:
                continue
            argv += [f"--{name.replace('_', '-')}", str(value)]
        argv += list(request.extra_args)
        # The stub mimics vLLM, down to where it reads its key from; with `api=tei` its
        # /metrics also has TEI's names, and those are the ones it declares.
        tei = str(request.options.get("api")) == "tei"
        return vllm_launch(request, argv, {}, kind, served,
                           capacity=option_int(request.options, "capacity") or 256,
                           max_model_len=option_int(request.options, "max_model_len") or 2048,
                           metrics=TEI_METRICS if tei else VLLM_METRICS)
