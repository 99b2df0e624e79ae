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
