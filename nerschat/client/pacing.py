"""How many requests to keep in flight on one endpoint: measured, not guessed.

`AdaptiveLimit` follows the latency of finished work (a gradient limit, as in TCP Vegas or
Netflix's concurrency-limits): while latency stays near the lowest seen, the servers have
idle slots and the limit doubles; once work queues at the servers, latency grows and the
limit settles where the latency is about `tolerance` times the service time, that is
about `tolerance` times what the servers run at once (like a plain client keeping twice the
capacity in flight). Each endpoint of a pool has its own limit
(`EndpointLoad.limit`), so a fast replica gets more work than a slow one, and an advertised
capacity (whose unit differs between engines) is never needed.
"""

from __future__ import annotations

import math


class Baseline:
    """The service time without queueing (seconds): the lowest window average seen.

    Replicas of one model share one, so each one's latency is judged against the same base:
    a replica holding more work than its peers sees more latency and gets less, and a
    slowdown every replica sees alike (a busy client) moves them all alike.
    """

    def __init__(self) -> None:
        self.value: float | None = None

    def update(self, average: float) -> float:
        """Take one window's average latency into account; returns the baseline."""
        if self.value is None or average < self.value:
            self.value = average
        return self.value


class AdaptiveLimit:
    """A concurrency limit in [minimum, maximum] adapted to observed latency (seconds).

    `baseline` may be shared with the limits of other replicas of the same model.
    """

    def __init__(self, initial: int = 16, minimum: int = 4, maximum: int = 4096,
                 tolerance: float = 2.0, baseline: Baseline | None = None):
        self.limit = float(max(minimum, min(initial, maximum)))
        self.minimum, self.maximum, self.tolerance = minimum, maximum, tolerance
        self.baseline = baseline or Baseline()
        self._sum = 0.0
        self._count = 0

    @property
    def min_latency(self) -> float | None:
        """The baseline latency (seconds; None before a first window)."""
        return self.baseline.value

    def observe(self, latency: float) -> None:
        """Record one finished unit of work; adjusts `limit` once per window of work."""
        self._sum += latency
        self._count += 1
        if self._count < max(8, int(self.limit) // 2):
            return
        average = self._sum / self._count
        self._sum, self._count = 0.0, 0
        ratio = self.baseline.update(average) / max(average, 1e-9)
        if ratio > 0.8:  # no queue yet: grow quickly
            new = self.limit * 2
        else:
            new = self.limit * min(1.0, self.tolerance * ratio) + math.sqrt(self.limit)
        self.limit = max(float(self.minimum), min(float(self.maximum), new))

    @property
    def current(self) -> int:
        """The current concurrency limit, as a whole number of requests."""
        return int(self.limit)
