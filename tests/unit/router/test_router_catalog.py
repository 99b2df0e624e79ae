"""Which models the router answers for, refuses at once, or waits for."""

from __future__ import annotations

import time

from nerschat.registry import Registry
from nerschat.router.catalog import Catalog
from nerschat.router.entry import new_entry, router_key
from tests.conftest import make_endpoint


async def test_ready_starting_and_absent(registry: Registry) -> None:
    registry.publish(make_endpoint(id="a", model="m1", max_model_len=4096))
    registry.publish(make_endpoint(id="b", model="m1", max_model_len=2048))
    registry.publish(make_endpoint(id="c", model="coming", state="starting"))
    registry.publish(make_endpoint(id="q", model="queued", state="pending", url=""))
    registry.publish(make_endpoint(id="d", model="gone", heartbeat_at=time.time() - 100, ttl=5))
    registry.publish(make_endpoint(id="e", model="bye", state="draining"))
    registry.publish(new_entry("h", 1, router_key(None), ttl=30))
    catalog = Catalog(registry)
    assert await catalog.availability("m1") == "ready"
    assert await catalog.availability("coming") == "starting"
    assert await catalog.availability("queued") == "starting"
    for model in ("gone", "bye", "nerschat-router", "never"):
        assert await catalog.availability(model) == "absent"
    (card,) = catalog.cards()
    assert (card.id, card.kind, card.replicas, card.max_model_len) == ("m1", "llm", 2, 2048)


async def test_a_model_published_a_moment_ago_is_found(registry: Registry) -> None:
    catalog = Catalog(registry, interval=3600)
    assert await catalog.availability("m1") == "absent"
    registry.publish(make_endpoint(id="a", model="m1"))
    assert await catalog.availability("m1") == "ready"
