"""nerschat: LLM (vLLM) and embedding (TEI) servers as services inside SLURM jobs.

Pilots publish servers in a registry on the shared file system; clients find them there,
wait for them, balance load over them and fail over when one dies.
"""

from __future__ import annotations

__version__ = "0.1.0"

from nerschat.client.connect import aconnect, connect, endpoints  # noqa: E402
from nerschat.client.readiness import EndpointTimeout, wait_for_endpoints  # noqa: E402
from nerschat.registry import Endpoint, Registry, default_registry_path  # noqa: E402

__all__ = [
    "Endpoint",
    "EndpointTimeout",
    "Registry",
    "__version__",
    "aconnect",
    "connect",
    "default_registry_path",
    "endpoints",
    "wait_for_endpoints",
]
