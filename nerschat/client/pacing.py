"""How many requests to keep in flight on one endpoint: measured, not guessed.

`AdaptiveLimit` follows the latency of finished work (a gradient limit, as in TCP Vegas or
Netflix's concurrency-limits): while latency stays near the lowest seen, the servers have
idle slots and the limit doubles; once work queues at the servers, latency grows and the
limit settles where the latency is about `tolerance` times the service time, that is
about `tolerance` times what the servers run at once (like a plain client keeping twice the
capacity in flight). Each endpoint of a pool has its own limit
(`EndpointLoad.limit`), so a fast replica gets more work than a slow one, and an advertised
capacity (whose unit differs between engines) is never needed.

While the limit doubles, the work finishing first was sent at the old limit and shows no
queue yet, so a decision on it would double again past the knee; after a doubling, only work
sent after it counts (as TCP measures a round trip per window sent).

The baseline is only as good as the lowest load it was measured at. When the client process
itself is the bottleneck (a fast server, a busy event loop), requests queue in the client,
latency grows with what is in flight at any limit, and a baseline measured at a high start
(an advertised capacity of hundreds of sequences) would hold the limit there or higher,
where each extra request in flight costs memory and buys nothing. So every PROBE_EVERY
windows, the limit drops to a quarter for one window of work sent
after the drain, to measure the latency at a lower load, as BBR's ProbeRTT does for TCP
(Cardwell et al., "BBR: Congestion-Based Congestion Control", ACM Queue 14(5), 2016); it then
returns to where it was, and the gradient takes it from there. A floor (`minimum`, e.g. a
generation server's advertised sequences) bounds the probe as it bounds the limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


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

    PROBE_EVERY = 64
    """Windows of work between two probes of the latency at a lower load."""
    PROBE_DEPTH = 4.0
    """A probe divides the limit by this much (at most down to `minimum`). Less than the
    gradient's `tolerance` would only confirm the baseline that set the limit."""

    def __init__(self, initial: int = 16, minimum: int = 4, maximum: int = 4096,
                 tolerance: float = 2.0, baseline: Baseline | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.limit = float(max(minimum, min(initial, maximum)))
        self.minimum, self.maximum, self.tolerance = minimum, maximum, tolerance
        self.baseline = baseline or Baseline()
        self.clock = clock
        self._sum = 0.0
        self._count = 0
        self._windows = 0
        self._resume: float | None = None  # while probing: the limit to return to
        self._drained_at: float | None = None  # while probing: when in flight fell to the limit
        self._waited = 0  # while probing: units finished since it began
        self._doubled_at: float | None = None  # when the limit last doubled (on `clock`)

    @property
    def probing(self) -> bool:
        """Whether the limit is lowered for a probe of the latency at a lower load."""
        return self._resume is not None

    @property
    def min_latency(self) -> float | None:
        """The baseline latency (seconds; None before a first window)."""
        return self.baseline.value

    def observe(self, latency: float, in_flight: int | None = None) -> None:
        """Record one finished unit of work; adjusts `limit` once per window of work.

        `latency` is the unit's time from start to finish (seconds, on `clock`); `in_flight`
        the units in flight when it finished, itself included (None: not known).
        """
        if self._resume is not None:
            self._probe(latency, in_flight)
            return
        if self._doubled_at is not None and self.clock() - latency < self._doubled_at:
            return  # sent before the limit doubled: it measured the old limit
        average = self._window(latency)
        if average is None:
            return
        ratio = self.baseline.update(average) / max(average, 1e-9)
        self._doubled_at = None
        if ratio > 0.8:  # no queue yet: grow quickly
            new = self.limit * 2
            self._doubled_at = self.clock()
        else:
            new = self.limit * min(1.0, self.tolerance * ratio) + math.sqrt(self.limit)
        self.limit = max(float(self.minimum), min(float(self.maximum), new))
        self._windows += 1
        probe = max(float(self.minimum), self.limit / self.PROBE_DEPTH)
        if self._windows % self.PROBE_EVERY == 0 and probe < self.limit:
            self._resume, self._drained_at, self._waited = self.limit, None, 0
            self.limit = probe

    def _probe(self, latency: float, in_flight: int | None) -> None:
        """One unit finished while probing: only work sent after the drain is measured."""
        now = self.clock()
        assert self._resume is not None
        self._waited += 1
        if self._waited > 4 * self._resume:  # in flight is not ours to lower (a fixed number)
            self.limit, self._resume = self._resume, None
            self._sum, self._count = 0.0, 0
            return
        if self._drained_at is None:
            if in_flight is not None and in_flight > self.limit:
                return  # work sent before the probe is still finishing
            self._drained_at = now
        if now - latency < self._drained_at:
            return
        average = self._window(latency)
        if average is not None:
            self.baseline.update(average)
            self.limit, self._resume = self._resume, None

    def _window(self, latency: float) -> float | None:
        """Add one latency to the window; its average once the window is full (then reset)."""
        self._sum += latency
        self._count += 1
        if self._count < max(8, int(self.limit) // 2):
            return None
        average = self._sum / self._count
        self._sum, self._count = 0.0, 0
        return average

    @property
    def current(self) -> int:
        """The current concurrency limit, as a whole number of requests."""
        return int(self.limit)
