"""Engine recipes: vLLM, Text Embeddings Inference, and the stub used by tests/benchmarks."""

from __future__ import annotations

from nerschat.pilot.engines.base import EngineError, EngineRecipe, LaunchRequest, ServerLaunch
from nerschat.pilot.engines.stub import StubRecipe
from nerschat.pilot.engines.tei import TeiRecipe
from nerschat.pilot.engines.vllm import VllmRecipe

ENGINES: dict[str, EngineRecipe] = {
    "vllm": VllmRecipe(),
    "tei": TeiRecipe(),
    "stub": StubRecipe(),
}


def get_engine(name: str) -> EngineRecipe:
    """The recipe called `name`; EngineError naming the choices otherwise."""
    try:
        return ENGINES[name]
    except KeyError:
        raise EngineError(
            f"unknown engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}"
        ) from None


__all__ = ["ENGINES", "EngineError", "EngineRecipe", "LaunchRequest", "ServerLaunch", "get_engine"]
