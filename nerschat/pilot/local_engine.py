"""Where the local real engine lives: the vLLM CPU build and the two small local models.

`scripts/setup-local-engine.sh` builds them into `NERSCHAT_HOME` (default
`~/.cache/nerschat`), never into the repository (the Gemma weights carry their own terms).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nerschat.registry import Kind

LOCAL_PREFIX = "local:"


def nerschat_home() -> Path:
    """Where the local engine and models live: `NERSCHAT_HOME`, else `~/.cache/nerschat`."""
    return Path(os.environ.get("NERSCHAT_HOME") or Path.home() / ".cache" / "nerschat")


def engine_python() -> Path:
    """The Python of the local vLLM CPU build's environment."""
    return nerschat_home() / "engine-env" / "bin" / "python"


def engine_version() -> tuple[int, ...] | None:
    """The version of the local vLLM build, e.g. (0, 32, 0); None if it is not installed."""
    env = nerschat_home() / "engine-env" / "lib"
    for info in sorted(env.glob("python*/site-packages/vllm*-*.dist-info")):
        version = info.name.rsplit("-", 1)[0].split("-")[-1]
        parts = version.split(".")
        if all(p.isdigit() for p in parts[:2]):
            return tuple(int(p) for p in parts[:3] if p.isdigit())
    return None


def models_dir() -> Path:
    """Where the local models are."""
    return nerschat_home() / "models"


@dataclass(frozen=True)
class LocalModel:
    """A small real model built at set-up time, with the settings vLLM-on-CPU needs."""

    alias: str
    kind: Kind
    served_name: str
    vllm_args: tuple[str, ...]
    max_model_len: int
    max_num_seqs: int = 256

    def path(self) -> Path:
        """The model's directory on this machine."""
        if self.alias == "minilm":
            pointer = models_dir() / "minilm.path"
            if pointer.exists():
                return Path(pointer.read_text().strip())
        return models_dir() / self.alias


LOCAL_MODELS = {
    "gemma-3-270m": LocalModel(
        alias="gemma-3-270m",
        kind="llm",
        served_name="gemma-3-270m",
        # float32: on CPUs without bf16 instructions (like these) bfloat16 decodes slower.
        # --block-size 32: the CPU backend's default 128-token KV blocks are longer than most
        # judge prompts, and prefix caching reuses only full blocks (0% hits otherwise).
        vllm_args=("--max-model-len", "2048", "--dtype", "float32", "--block-size", "32"),
        max_model_len=2048,
        max_num_seqs=32,  # CPU decoding: a small batch already saturates the cores
    ),
    "minilm": LocalModel(
        alias="minilm",
        kind="embedding",
        served_name="all-MiniLM-L6-v2",
        vllm_args=("--runner", "pooling", "--dtype", "float32", "--max-model-len", "256"),
        max_model_len=256,
    ),
}


def is_local_model(model: str) -> bool:
    """True for `local:...` models (served by the local CPU build)."""
    return model.startswith(LOCAL_PREFIX)


def resolve_local_model(model: str) -> LocalModel:
    """`local:gemma-3-270m` -> its recipe, with a clear error naming the set-up step."""
    alias = model[len(LOCAL_PREFIX):]
    if alias not in LOCAL_MODELS:
        raise ValueError(
            f"unknown local model {model!r}; choose one of: "
            + ", ".join(LOCAL_PREFIX + name for name in sorted(LOCAL_MODELS))
        )
    return LOCAL_MODELS[alias]


def chat_template_path() -> Path:
    """The chat template the local Gemma model is served with."""
    return models_dir() / "gemma-3-270m" / "nerschat_chat_template.jinja"
