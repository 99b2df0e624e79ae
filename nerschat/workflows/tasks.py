"""The per-item work of each workflow (judge, run-batch; embed in `embed`), one interface."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import httpx2
import openai

from nerschat.registry import Endpoint
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
    """What a shard talks through (both route over the registry's endpoints).

    `max_model_len` is the context length (tokens) of the endpoint a unit is pinned to, else
    the smallest the ready endpoints advertise; `endpoints` are those ready at the start.
    """

    openai: openai.AsyncOpenAI
    http: httpx2.AsyncClient
    max_model_len: int | None = None
    endpoints: list[Endpoint] = field(default_factory=list)


class ItemTask(Protocol):
    """One kind of item work. `parse` raises FieldError for a bad record.

    Optional (see nerschat.workflows.core): a `model` attribute, `config()` (what results
    depend on besides the items; default: `to_dict()`'s options),
    `error_result(item, message)` (default: `{key: id, "error": message}`), `route_model(item)`
    (the model an item's requests go to), `read(path)` (its own input reader), `sink` (its own
    output), `packer(endpoint)` + `process_batch(clients, endpoint, items)` (batches sized to
    each endpoint) and `check_endpoints(ready)` (refuse endpoints it cannot use).
    """

    @property
    def name(self) -> str:
        """The task's name in `to_dict()` and the run config ("judge", "batch", ...)."""
        ...

    @property
    def key(self) -> str:
        """The id field, in input and output lines ("id", "custom_id")."""
        ...

    @property
    def kind(self) -> str | None:
        """Which endpoints it needs ("llm", "embed"; None: whatever the requests name).

        Read-only, so a class attribute typed `str` or `None` both satisfy it.
        """
        ...

    def parse(self, record: dict[str, Any]) -> Any:
        """One item from one input record; raises FieldError for a bad field."""
        ...

    def item_id(self, item: Any) -> str:
        """The item's id, written under `key` in its output line."""
        ...

    async def process(self, clients: Clients, item: Any) -> dict[str, Any]:
        """One output line for `item`; request and answer errors become its `error` field."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-able description to rebuild it from: `{"task": name, "options": {}}`."""
        ...

    def needs_model(self) -> bool:
        """True if every request must name one model (resolved before the run)."""
        ...

    def bind_model(self, model: str) -> None:
        """Name the served model every request asks for.

        Raises TypeError for a task whose requests name their own model.
        """
        ...


class JudgeTask:
    """LLM-as-a-judge over {id, question, answers, ...} items."""

    name: str = "judge"
    key: str = "id"
    kind: str | None = "llm"

    def __init__(self, options: JudgeOptions | None = None):
        self.options = options or JudgeOptions()

    @property
    def model(self) -> str | None:
        """The model the judge asks for (None until named or bound)."""
        return self.options.model

    def parse(self, record: dict[str, Any]) -> JudgeItem:
        """A JudgeItem from one record; FieldError for a bad field or one the template lacks."""
        item = parse_judge_item(record)
        check_template(item, self.options.template)
        return item

    def item_id(self, item: JudgeItem) -> str:
        """The item's `id`."""
        return item.id

    async def process(self, clients: Clients, item: JudgeItem) -> dict[str, Any]:
        """One verdict line through `clients.openai`.

        Its context budget is `clients.max_model_len` tokens (None: no budget known).
        """
        return await judge_item(clients.openai, item, self.options,
                                max_model_len=clients.max_model_len)

    def error_result(self, item: JudgeItem, message: str) -> dict[str, Any]:
        """The output line of an item that failed with `message` (verdict fields null)."""
        return {"id": item.id, "answer": None, "index": None, "reasoning": None,
                "error": message}

    def config(self) -> dict[str, Any]:
        """The options the verdicts depend on (all but `attempts`), fingerprinted for resumption."""
        options = asdict(self.options)
        options.pop("attempts", None)
        return {"task": self.name, **options}

    def to_dict(self) -> dict[str, Any]:
        """`{"task": "judge", "options": JudgeOptions fields}`; `task_from_dict` rebuilds it."""
        return {"task": self.name, "options": asdict(self.options)}

    def needs_model(self) -> bool:
        """Always True: every judge request names one model."""
        return True

    def bind_model(self, model: str) -> None:
        """Name the served model every judge request asks for."""
        self.options.model = model


class BatchTask:
    """OpenAI batch-file requests, each naming its own model."""

    name: str = "batch"
    key: str = "custom_id"
    kind: str | None = None  # a batch file may mix chat, completion and embedding requests

    @property
    def model(self) -> str | None:
        """Always None: each batch request names its own model."""
        return None

    def parse(self, record: dict[str, Any]) -> BatchRequest:
        """A BatchRequest from one batch-file line; raises FieldError for a bad field."""
        return parse_batch_request(record)

    def item_id(self, item: BatchRequest) -> str:
        """The request's `custom_id`."""
        return item.custom_id

    def route_model(self, item: BatchRequest) -> str | None:
        """The model the request goes to (its `body.model`)."""
        model = item.body.get("model")
        return model if isinstance(model, str) else None

    async def process(self, clients: Clients, item: BatchRequest) -> dict[str, Any]:
        """One batch-output line for the request, sent through `clients.http`."""
        return await run_batch_request(clients.http, item)

    def error_result(self, item: BatchRequest, message: str) -> dict[str, Any]:
        """The batch-output line of a request that failed with `message` (`response` null)."""
        return {"id": None, "custom_id": item.custom_id, "response": None, "error": message}

    def config(self) -> dict[str, Any]:
        """Only the task name: each request carries the rest of what its result depends on."""
        return {"task": self.name}  # everything else is in each request body

    def to_dict(self) -> dict[str, Any]:
        """`{"task": "batch", "options": {}}`; `task_from_dict` rebuilds it."""
        return {"task": self.name, "options": {}}

    def needs_model(self) -> bool:
        """Always False: each request names its own model."""
        return False  # each request names its own

    def bind_model(self, model: str) -> None:
        """Always raises TypeError: batch requests name their own model."""
        raise TypeError("batch requests name their own model")


def task_from_dict(spec: dict[str, Any]) -> ItemTask:
    """Rebuild a task on a Parsl worker from its plain description."""
    if spec["task"] == "judge":
        return JudgeTask(JudgeOptions(**spec["options"]))
    if spec["task"] == "batch":
        return BatchTask()
    if spec["task"] == "embed":
        from nerschat.workflows.embed import EmbedTask

        return EmbedTask.from_dict(spec)
    if str(spec["task"]).startswith("judge-"):
        from nerschat.judging.modes import task_from_dict as judging_task_from_dict

        return judging_task_from_dict(spec)
    raise ValueError(f"unknown task {spec['task']!r}")
