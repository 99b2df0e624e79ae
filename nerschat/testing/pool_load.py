"""Steady load and a per-second readiness timeline, for pool tests and benchmarks.

sampler = ReadySampler(registry, "m").start()
load = SteadyLoad(registry, "m", rate=4.0).start()
...
load.stop(); sampler.stop()
load.lost, load.duplicated, sampler.lowest_since(2)
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from nerschat.registry import Registry


@dataclass
class ReadySampler:
    """Counts the ready, fresh entries of `model` every `period` seconds in a thread."""

    registry: Registry
    model: str
    period: float = 1.0
    samples: list[tuple[float, int]] = field(default_factory=list)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ReadySampler:
        """Sample from now on."""
        self._thread = threading.Thread(target=self._run, name="ready-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._halt.is_set():
            now = time.time()
            ready = Registry(self.registry.path).endpoints(self.model)
            self.samples.append((now, len(ready)))
            self._halt.wait(max(0.0, self.period - (time.time() - now)))

    def stop(self) -> None:
        """Stop sampling."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(10)

    def lowest_since(self, count: int) -> int | None:
        """The fewest ready entries after `count` were first ready (None if never)."""
        first = next((i for i, (_, n) in enumerate(self.samples) if n >= count), None)
        if first is None:
            return None
        return min(n for _, n in self.samples[first:])

    def timeline(self, width: int = 60) -> str:
        """One character per sample (the ready count, `+` above 9), `width` per line."""
        chars = "".join(str(n) if n < 10 else "+" for _, n in self.samples)
        return "\n".join(chars[i:i + width] for i in range(0, len(chars), width))


@dataclass
class SteadyLoad:
    """`rate` chat requests per second through `aconnect()`, each carrying its own item id.

    `answers` counts successful replies per item: `lost` are items sent without a reply,
    `duplicated` items answered more than once.
    """

    registry: Registry
    model: str
    rate: float = 4.0
    timeout: float = 120.0
    answers: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> SteadyLoad:
        """Send from now on (blocks until the model has a ready endpoint)."""
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()),
                                        name="steady-load", daemon=True)
        self._thread.start()
        return self

    async def _run(self) -> None:
        from nerschat.client.connect import aconnect

        client = aconnect(self.model, registry=self.registry.path, timeout=self.timeout,
                          max_retries=8)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._halt.is_set():
                item = self.sent
                self.sent += 1
                task = asyncio.create_task(self._one(client, item))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                await asyncio.sleep(1.0 / self.rate)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout)
        finally:
            await client.close()

    async def _one(self, client: object, item: int) -> None:
        try:
            reply = await client.chat.completions.create(  # type: ignore[attr-defined]
                model=self.model, messages=[{"role": "user", "content": f"item {item}"}],
                max_tokens=4)
            if reply.choices:
                self.answers[item] += 1
        except Exception as exc:  # noqa: BLE001 -- every failure is a lost item, recorded
            self.errors.append(f"item {item}: {type(exc).__name__}: {exc}"[:300])

    def stop(self) -> None:
        """Stop sending; wait for the replies still in flight."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(self.timeout + 10)

    @property
    def lost(self) -> int:
        """Items sent that got no reply."""
        return sum(1 for i in range(self.sent) if self.answers[i] == 0)

    @property
    def duplicated(self) -> int:
        """Items answered more than once."""
        return sum(1 for n in self.answers.values() if n > 1)
