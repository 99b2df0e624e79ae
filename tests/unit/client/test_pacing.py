"""The adaptive in-flight limit finds a server's capacity from latency alone."""

from __future__ import annotations

from nerschat.client.pacing import AdaptiveLimit


def settle(capacity: int, latency: float = 0.5, windows: int = 200) -> AdaptiveLimit:
    """Feed the latency a server with `capacity` slots would show at the current limit."""
    limit = AdaptiveLimit(initial=16)
    for _ in range(windows):
        queued = max(1.0, limit.limit / capacity)
        for _ in range(max(8, limit.current)):
            limit.observe(latency * queued)
    return limit


def test_limit_settles_above_capacity_but_bounded() -> None:
    for capacity in (32, 128, 600):
        limit = settle(capacity)
        assert capacity <= limit.current <= 3 * capacity, (capacity, limit.current)


def test_limit_stays_in_bounds() -> None:
    limit = AdaptiveLimit(initial=10, minimum=4, maximum=50)
    for _ in range(100):
        limit.observe(0.1)
    assert limit.current == 50
    for _ in range(1000):
        limit.observe(100.0)
    assert limit.current >= 4


def test_replicas_sharing_a_baseline_balance_instead_of_one_taking_all() -> None:
    from nerschat.client.pacing import Baseline

    shared = Baseline()
    busy, idle = (AdaptiveLimit(initial=64, baseline=shared) for _ in range(2))
    for _ in range(64):
        idle.observe(1.0)  # both see the same service time at first
    for _ in range(20):
        for _ in range(64):
            busy.observe(4.0)  # this one queues: four times the service time
            idle.observe(1.0)
    assert busy.current < 64 < idle.current
    assert busy.min_latency == idle.min_latency == 1.0


def test_only_a_generation_servers_capacity_bounds_its_limit_from_below() -> None:
    from nerschat.client.routing import INITIAL_IN_FLIGHT, EndpointLoad
    from tests.conftest import make_endpoint

    llm = EndpointLoad.of(make_endpoint(kind="llm", capacity=32)).limit
    assert (llm.minimum, llm.current) == (32, 64)  # vLLM's max_num_seqs: requests at once
    # TEI's max_concurrent_requests (an admission cap) and vLLM's sequences of an embedding
    # request (one per text) count no requests: the measured limit alone decides.
    for capacity in (512, 32):
        emb = EndpointLoad.of(make_endpoint(kind="embedding", capacity=capacity)).limit
        assert (emb.minimum, emb.current) == (4, INITIAL_IN_FLIGHT)
