"""The adaptive in-flight limit finds a server's capacity from latency alone."""

from __future__ import annotations

from collections.abc import Callable

from nerschat.client.pacing import AdaptiveLimit


def settle(capacity: int, latency: float = 0.5, windows: int = 200) -> AdaptiveLimit:
    """Feed the latency a server with `capacity` slots would show at the current limit."""
    clock = [0.0]
    limit = AdaptiveLimit(initial=16, clock=lambda: clock[0])
    for _ in range(windows):
        queued = max(1.0, limit.limit / capacity)
        for _ in range(max(8, limit.current)):
            clock[0] += latency * queued / limit.limit
            limit.observe(latency * queued, limit.current)
    while limit.probing:  # end on the limit itself, not on a probe of a lower load
        clock[0] += latency / limit.limit
        limit.observe(latency, limit.current)
    return limit


def test_limit_settles_above_capacity_but_bounded() -> None:
    for capacity in (32, 128, 600):
        limit = settle(capacity)
        assert capacity <= limit.current <= 3 * capacity, (capacity, limit.current)


def test_limit_stays_in_bounds() -> None:
    clock = [0.0]
    limit = AdaptiveLimit(initial=10, minimum=4, maximum=50, clock=lambda: clock[0])
    for _ in range(100):
        clock[0] += 1.0
        limit.observe(0.1)
    assert limit.current == 50
    for _ in range(1000):
        clock[0] += 200.0
        limit.observe(100.0)
    assert limit.current >= 4


def test_after_doubling_only_work_sent_at_the_new_limit_counts() -> None:
    clock = [0.0]
    limit = AdaptiveLimit(initial=16, minimum=4, clock=lambda: clock[0])
    for _ in range(8):  # one window, no queue: the limit doubles at t=1
        clock[0] += 0.125
        limit.observe(0.5)
    assert limit.current == 32
    for _ in range(100):  # sent before t=1, at the old limit: not evidence for the new one
        clock[0] += 0.001
        limit.observe(0.5)
    assert limit.current == 32
    clock[0] = 3.0
    for _ in range(16):  # sent after the doubling, and queued: the limit grows no more
        limit.observe(1.5)
    assert limit.current < 64


def test_replicas_sharing_a_baseline_balance_instead_of_one_taking_all() -> None:
    from nerschat.client.pacing import Baseline

    shared = Baseline()
    clock = [0.0]
    busy, idle = (AdaptiveLimit(initial=64, baseline=shared, clock=lambda: clock[0])
                  for _ in range(2))
    for _ in range(64):
        idle.observe(1.0)  # both see the same service time at first
    for _ in range(20):
        for _ in range(64):
            clock[0] += 0.05
            busy.observe(4.0)  # this one queues: four times the service time
            idle.observe(1.0)
    assert busy.current < 64 < idle.current
    assert busy.min_latency == idle.min_latency == 1.0


def test_only_a_generation_servers_capacity_bounds_its_limit_from_below() -> None:
    from nerschat.client.routing import INITIAL_IN_FLIGHT, EndpointLoad
    from tests.conftest import make_endpoint

    llm = EndpointLoad.of(make_endpoint(kind="llm", capacity=32)).limit
    assert (llm.minimum, llm.current) == (32, 32)  # vLLM's max_num_seqs: requests at once
    large = EndpointLoad.of(make_endpoint(kind="llm", capacity=100_000)).limit
    assert (large.minimum, large.current) == (128, 128)
    # TEI's max_concurrent_requests (an admission cap) and vLLM's sequences of an embedding
    # request (one per text) count no requests: the measured limit alone decides.
    for capacity in (512, 32):
        emb = EndpointLoad.of(make_endpoint(kind="embedding", capacity=capacity)).limit
        assert (emb.minimum, emb.current) == (4, INITIAL_IN_FLIGHT)



def test_the_start_measures_the_service_time_without_a_queue() -> None:
    """32 slots of 0.5 s, advertised: the limit starts at the 32 requests the server runs at
    once, so the first window's latency is the service time; started at twice that, the
    first window waited behind a full server, and that baseline let the limit climb to about
    4C before the first probe."""
    from nerschat.client.routing import EndpointLoad
    from tests.conftest import make_endpoint

    def slots(level: float) -> float:
        return 0.5 * max(1.0, level / 32)

    start = EndpointLoad.of(make_endpoint(kind="llm", capacity=32)).limit.current
    levels = steady(slots, start, 32, 20_000)
    assert max(levels) <= 2.5 * 32, max(levels)
    held = levels[-5000:]  # twice what the server runs at once, but during a probe
    assert sum(level >= 64 for level in held) >= 0.9 * len(held)
    assert max(steady(slots, 64, 32, 20_000)) > 3 * 32  # the old start, for comparison


def steady(latency_at: Callable[[float], float], initial: int, minimum: int, units: int,
           setup: float = 0.0, probe_every: int | None = None) -> list[int]:
    """The limit after each of `units` units, each taking `latency_at(limit)` seconds (the
    first `initial` also `setup` seconds: connections opening), finishing at the rate the
    limit allows (limit / latency per second, on a simulated clock)."""
    clock = [0.0]
    limit = AdaptiveLimit(initial=initial, minimum=minimum, clock=lambda: clock[0])
    if probe_every is not None:
        limit.PROBE_EVERY = probe_every  # type: ignore[misc]
    levels = []
    for n in range(units):
        level = limit.limit
        latency = latency_at(level) + (setup if n < initial else 0.0)
        clock[0] += latency / level
        limit.observe(latency, int(level))
        levels.append(limit.current)
    return levels


def test_a_client_bound_run_does_not_hold_a_high_start_in_flight() -> None:
    """A fast server whose only queue is the client (1,000 units/s, so latency grows with
    what is in flight), started at 256 with a floor of 128 (a stub advertising a large
    capacity), the first window slowed by opening connections: without the probes the
    baseline from that window holds the limit above 500 for good; the probes bring it to
    about twice the floor."""
    def client_bound(level: float) -> float:
        return level / 1000

    probed = steady(client_bound, 256, 128, 300_000, setup=0.3)
    held = steady(client_bound, 256, 128, 300_000, setup=0.3, probe_every=10**9)
    assert max(probed[-1000:]) <= 300, max(probed[-1000:])
    assert min(held[-1000:]) >= 500, min(held[-1000:])


def test_a_probe_corrects_a_baseline_measured_with_a_queue() -> None:
    """32 slots of 0.5 s, started at 64 as for a server advertising 32 sequences: the first
    window already queues (1 s), so that baseline alone holds about 4C in flight; the first
    probe (at the floor, 32) measures the 0.5 s service time, and the limit settles near 2C."""
    def server_bound(level: float) -> float:
        return 0.5 * max(1.0, level / 32)

    probed = steady(server_bound, 64, 32, 50_000)
    held = steady(server_bound, 64, 32, 50_000, probe_every=10**9)
    outside_probes = [level for level in probed[-5000:] if level > 32]
    assert 48 <= min(outside_probes) and max(outside_probes) <= 96, set(outside_probes)
    assert min(held[-5000:]) >= 128, min(held[-5000:])


def test_a_probe_measures_only_work_sent_after_the_drain() -> None:
    clock = [100.0]
    limit = AdaptiveLimit(initial=64, minimum=4, clock=lambda: clock[0])
    limit.baseline.value = 1.0
    limit._resume, limit.limit = 64.0, 16.0  # a probe has just begun
    for _ in range(40):  # work sent before the probe: in flight above the probe's 16
        limit.observe(0.1, in_flight=60)
    assert limit.probing and limit.min_latency == 1.0
    limit.observe(0.1, in_flight=16)  # drained; this unit was sent before, though
    for _ in range(7):
        clock[0] += 1.0
        limit.observe(0.5, in_flight=16)
    assert limit.probing  # 7 of 8 units measured
    clock[0] += 1.0
    limit.observe(0.5, in_flight=16)
    assert not limit.probing and limit.current == 64 and limit.min_latency == 0.5


def test_a_probe_that_cannot_drain_gives_up() -> None:
    """A run with a fixed number in flight never lowers it for a probe: after four times
    the limit's units the probe ends without a measurement, the limit as it was."""
    clock = [0.0]
    limit = AdaptiveLimit(initial=64, clock=lambda: clock[0])
    limit.baseline.value = 1.0
    limit._resume, limit.limit = 64.0, 16.0
    for _ in range(4 * 64):
        clock[0] += 0.01
        limit.observe(0.2, in_flight=64)
    assert limit.probing
    limit.observe(0.2, in_flight=64)
    assert not limit.probing and limit.current == 64 and limit.min_latency == 1.0
