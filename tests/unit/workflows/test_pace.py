"""The adaptive in-flight limit finds a server's capacity from latency alone."""

from __future__ import annotations

import asyncio

from nerschat.workflows.pace import AdaptiveLimit, drive


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


async def test_drive_keeps_a_fixed_number_in_flight_and_raises_errors() -> None:
    active = peak = 0
    done: list[int] = []

    async def handle(unit: int) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.001)
        active -= 1
        done.append(unit)

    await drive(iter(range(100)), handle, 7)
    assert sorted(done) == list(range(100)) and peak == 7

    async def failing(unit: int) -> None:
        if unit == 3:
            raise OSError("disk full")

    try:
        await drive(iter(range(10)), failing, 2)
    except OSError as exc:
        assert "disk full" in str(exc)
    else:
        raise AssertionError("the error was swallowed")
