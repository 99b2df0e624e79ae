"""nerschat: LLM (vLLM) and embedding (TEI) servers as services inside SLURM jobs.

Pilots publish servers in a registry on the shared file system; clients find them there,
wait for them, balance load over them and fail over when one dies.

Names are imported lazily: `nerschat serve` on a compute node should not pay for importing
the OpenAI SDK (about a second) before it starts the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Endpoint": "nerschat.registry",
    "Registry": "nerschat.registry",
    "default_registry_path": "nerschat.registry",
    "connect": "nerschat.client.connect",
    "aconnect": "nerschat.client.connect",
    "endpoints": "nerschat.client.connect",
    "pool_of": "nerschat.client.connect",
    "RoutingSettings": "nerschat.client.routing",
    "EndpointTimeout": "nerschat.client.readiness",
    "wait_for_endpoints": "nerschat.client.readiness",
    "load_embeddings": "nerschat.workflows.embed",
    "PilotGroup": "nerschat.parsl.pilots",
    "launch": "nerschat.parsl.launch",
    "Pool": "nerschat.pool",
}

if TYPE_CHECKING:
    from nerschat.client.connect import aconnect, connect, endpoints, pool_of
    from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints
    from nerschat.client.routing import RoutingSettings
    from nerschat.parsl.launch import launch
    from nerschat.parsl.pilots import PilotGroup
    from nerschat.pool import Pool
    from nerschat.registry import Endpoint, Registry, default_registry_path
    from nerschat.workflows.embed import load_embeddings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'nerschat' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*_EXPORTS, "__version__"])


__all__ = [
    "Endpoint",
    "EndpointTimeout",
    "PilotGroup",
    "Pool",
    "Registry",
    "RoutingSettings",
    "aconnect",
    "connect",
    "default_registry_path",
    "endpoints",
    "launch",
    "load_embeddings",
    "pool_of",
    "wait_for_endpoints",
]
