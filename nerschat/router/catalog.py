"""What the registry serves, as the router answers `/v1/models` and refuses unknown models.

A cached scan (re-read every `interval` seconds, and at once, rate-limited, when asked about
a model it does not know) so a model nobody serves gets its 404 without waiting, while one
whose server is still starting (or whose job is queued) is forwarded: the routing core waits
for it up to the router's wait timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from nerschat.registry import MODEL_KINDS, Endpoint, Registry

Availability = Literal["ready", "starting", "absent"]


@dataclass(frozen=True)
class ModelCard:
    """One served model: its kind, engine, context/input limit and ready replica count."""

    id: str
    kind: str
    engine: str
    max_model_len: int | None
    replicas: int

    def to_openai(self) -> dict[str, Any]:
        """The card as an OpenAI model object plus nerschat's fields."""
        return {"id": self.id, "object": "model", "created": 0, "owned_by": "nerschat",
                "kind": self.kind, "engine": self.engine, "max_model_len": self.max_model_len,
                "replicas": self.replicas}


class Catalog:
    """The registry's models, refreshed at most every `interval` s (`min_gap` s when forced)."""

    def __init__(self, registry: Registry, *, interval: float = 2.0, min_gap: float = 0.25):
        self.registry = registry
        self.interval = interval
        self.min_gap = min_gap
        self._read_at = -1e18
        self._ready: dict[str, list[Endpoint]] = {}
        self._starting: set[str] = set()

    def refresh(self, *, force: bool = False) -> None:
        """Re-read the registry if `interval` s passed (`min_gap` s when forced)."""
        now = time.monotonic()
        if now - self._read_at < (self.min_gap if force else self.interval):
            return
        self._read_at = now
        wall = time.time()
        ready: dict[str, list[Endpoint]] = {}
        starting: set[str] = set()
        for entry in self.registry.scan().entries:
            if entry.kind not in MODEL_KINDS or entry.is_stale(wall):
                continue
            if entry.is_usable(wall):
                ready.setdefault(entry.model, []).append(entry)
            elif entry.state in ("pending", "starting", "unhealthy"):  # queued, loading, or
                # not answering its probe for now (its pilot may recover it)
                starting.add(entry.model)
        self._ready, self._starting = ready, starting

    async def availability(self, model: str) -> Availability:
        """`ready`, `starting` (forward: the request waits) or `absent` (answer 404 now).

        An unknown model gets a fresh read of the registry first (at most `min_gap` s
        later), so an entry published a moment ago is not refused.
        """
        self.refresh()
        if model not in self._ready and model not in self._starting:
            await asyncio.sleep(max(0.0, self._read_at + self.min_gap - time.monotonic()))
            self.refresh(force=True)
        if model in self._ready:
            return "ready"
        return "starting" if model in self._starting else "absent"

    def kind_of(self, model: str) -> str | None:
        """The ready kind (`llm`/`embedding`) of a model, or None."""
        entries = self._ready.get(model)
        return entries[0].kind if entries else None

    def cards(self) -> list[ModelCard]:
        """Ready models, sorted by name."""
        self.refresh()
        cards = []
        for model, entries in sorted(self._ready.items()):
            limits = [e.max_model_len for e in entries if e.max_model_len]
            cards.append(ModelCard(model, entries[0].kind, entries[0].engine,
                                   min(limits) if limits else None, len(entries)))
        return cards

    def names(self) -> list[str]:
        """Ready models, then models still starting, each name once."""
        return sorted(self._ready) + sorted(self._starting - set(self._ready))
