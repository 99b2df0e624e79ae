"""One HTTP endpoint for every model in the registry, for any OpenAI or TEI client.

`nerschat router` runs it; `Router` / `RouterConfig` run it in-process. It forwards through
the same routing core as `nerschat.connect()` (see `nerschat.router.core`).
"""

from nerschat.router.entry import RouterKey, key_location, live_routers, router_key
from nerschat.router.server import Router, RouterConfig, run_router

__all__ = ["Router", "RouterConfig", "RouterKey", "key_location", "live_routers", "router_key",
           "run_router"]
