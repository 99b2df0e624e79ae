"""The per-item work of each batch workflow, behind one small interface."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

import httpx2
import openai

from nerschat.workflows.batch import BatchRequest, parse_batch_request, run_batch_request
from nerschat.workflows.judge import (
    JudgeItem,
    JudgeOptions,
    check_template,
    judge_item,
    parse_judge_item,
)


@dataclass
class Clients:
    """What a shard talks through (both route over the registry's endpoints)."""

    openai: openai.AsyncOpenAI
    http: httpx2.AsyncClient


class ItemTask(Protocol):
    name: str
    key: str  # the id field, in input and output lines
    kind: str | None  # which endpoints it needs (None: whatever the requests name)

    def parse(self, record: dict[str, Any]) -> Any: ...

    def item_id(self, item: Any) -> str: ...

    async def process(self, clients: Clients, item: Any) -> dict[str, Any]: ...

    def to_dict(self) -> dict[str, Any]: ...

    def needs_model(self) -> bool:
        """True if every request must name one model (resolved before the run)."""
        ...

    def bind_model(self, model: str) -> None: ...


class JudgeTask:
    name = "judge"
    key = "id"
    kind = "llm"

    def __init__(self, options: JudgeOptions | None = None):
        self.options = options or JudgeOptions()

    def parse(self, record: dict[str, Any]) -> JudgeItem:
        item = parse_judge_item(record)
        check_template(item, self.options.template)
        return item

    def item_id(self, item: JudgeItem) -> str:
        return item.id

    async def process(self, clients: Clients, item: JudgeItem) -> dict[str, Any]:
        return await judge_item(clients.openai, item, self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "options": asdict(self.options)}

    def needs_model(self) -> bool:
        return self.options.model is None

    def bind_model(self, model: str) -> None:
        self.options.model = model


class BatchTask:
    name = "batch"
    key = "custom_id"
    kind = None  # a batch file may mix chat, completion and embedding requests

    def parse(self, record: dict[str, Any]) -> BatchRequest:
        return parse_batch_request(record)

    def item_id(self, item: BatchRequest) -> str:
        return item.custom_id

    async def process(self, clients: Clients, item: BatchRequest) -> dict[str, Any]:
        return await run_batch_request(clients.http, item)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.name, "options": {}}

    def needs_model(self) -> bool:
        return False  # each request names its own

    def bind_model(self, model: str) -> None:
        raise TypeError("batch requests name their own model")


def task_from_dict(spec: dict[str, Any]) -> ItemTask:
    """Rebuild a task on a Parsl worker from its plain description."""
    if spec["task"] == "judge":
        return JudgeTask(JudgeOptions(**spec["options"]))
    if spec["task"] == "batch":
        return BatchTask()
    raise ValueError(f"unknown task {spec['task']!r}")
