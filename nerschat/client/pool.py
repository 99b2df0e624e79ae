"""The endpoint pool; it lives in the routing core (`nerschat.client.routing`)."""

from __future__ import annotations

from nerschat.client.routing import (
    MAX_COOLDOWN,
    MIN_COOLDOWN,
    EndpointLoad,
    EndpointPool,
    NoEndpointAvailable,
)

__all__ = ["MAX_COOLDOWN", "MIN_COOLDOWN", "EndpointLoad", "EndpointPool", "NoEndpointAvailable"]
