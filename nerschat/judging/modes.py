"""The judging protocols as item tasks: best-of, pairwise, score, classify.

Each class has the method names of `nerschat.workflows.tasks.JudgeTask` (`parse`, `item_id`,
`process`, `to_dict`, `needs_model`, `bind_model`), so the workflow core runs any of them;
`task_from_dict` rebuilds one on a worker. `parse` checks the input line against the
template: a missing field is a `FieldError`, which the reader reports as FILE:LINE before
anything is sent.

Output lines (one per item; `error` is None or one line, other verdict fields None then):

- best-of:  today's judge line (`nerschat.workflows.judge`) + `"mode": "best-of"`
- pairwise: `{id, mode, winner: "a"|"b"|"tie", consistent, flipped, probs: {a, b, tie},
  verdicts: [{order: "ab"|"ba", label, winner, probs, reasoning}], reasoning, model_a, model_b,
  gold, correct, usage, error}`
- score:    `{id, mode, score, expected_score, probs: {label: p}, reasoning, group, gold,
  correct, usage, error}`
- classify: `{id, mode, label, probability, probs, reasoning, group, gold, correct, usage,
  error}`

`gold` (the expected verdict, for agreement statistics) is the line's `gold` field; for
score and classify a `reference` that is itself a valid verdict (a label, an integer on the
scale) counts as gold too. `reference` otherwise is a reference answer shown by the
reference-guided templates (`reference=True`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import openai

from nerschat.errors import UsageError
from nerschat.judging.affinity import affinity_headers
from nerschat.judging.decide import Decision, StepSettings, decide_with_retries
from nerschat.judging.labels import expected_value
from nerschat.judging.templates import (
    check_template,
    default_template,
    item_fields,
    render,
    template_fields,
)
from nerschat.workflows.inputs import FieldError, require_str
from nerschat.workflows.judge import (
    DEFAULT_SYSTEM_PROMPT,
    JudgeItem,
    JudgeOptions,
    judge_item,
)
from nerschat.workflows.tasks import JudgeTask

PAIRWISE_SYSTEM_PROMPT = (
    "You are a careful, impartial judge. Compare two answers to the same question on "
    "correctness first, then completeness and clarity. Ignore the order in which they appear "
    "and their length. Say tie when neither is better."
)
SCORE_SYSTEM_PROMPT = (
    "You are a careful, impartial grader. Grade the answer on the given scale, using the "
    "whole scale: reserve the top for answers that are correct, complete and clear."
)
CLASSIFY_SYSTEM_PROMPT = (
    "You are a careful, impartial grader. Classify the answer with exactly one of the given "
    "labels, following their descriptions."
)


class JudgingConfigError(UsageError, ValueError):
    """A bad judging option (scale, labels, field names): one line naming it."""


MAX_SCALE_POINTS = 101
"""A score scale has at most this many points (e.g. 0-100): each is a label of the verdict's
constrained choice, and its probabilities are asked for."""


def check_temperature(value: Any) -> Any:
    """`value` if it is a finite number >= 0 (a sampling temperature); JudgingConfigError else.

    NaN and infinity cannot be sent (they are not JSON) and a negative one is refused by the
    servers, so every request of the run would fail.
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value < 0):
        raise JudgingConfigError(f"temperature {value!r}: must be a finite number >= 0 "
                                 "(e.g. 0 for greedy judging)")
    return value


def check_scale(value: Any, spec: str | None = None) -> tuple[int, int]:
    """A score scale (low, high) of integers, low < high, at most MAX_SCALE_POINTS points.

    `spec` is the option text to name in the error (JudgingConfigError); default: the value.
    """
    shown = f"--scale {spec!r}" if spec is not None else f"scale {value!r}"
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise JudgingConfigError(f"{shown}: expected two integers (low, high), e.g. (1, 10)")
    low, high = value
    if low >= high:
        raise JudgingConfigError(f"{shown}: the low end must be below the high end")
    points = high - low + 1
    if points > MAX_SCALE_POINTS:
        raise JudgingConfigError(f"{shown}: {points} points; at most {MAX_SCALE_POINTS} "
                                 f"(e.g. 0-100), each is a label the judge chooses among")
    return low, high


@dataclass
class JudgingOptions:
    """What every protocol takes.

    `template` None: the shipped one (`reference` picks the reference-guided variant);
    `field_map`: template field -> input key (e.g. `{"question": "prompt"}`); `affinity`:
    send the prefix-affinity header.
    """

    model: str | None = None
    template: str | None = None
    reference: bool = False
    system_prompt: str | None = None
    temperature: float = 0.0
    reasoning_tokens: int = 256
    attempts: int = 3
    field_map: dict[str, str] = field(default_factory=dict)
    gold_field: str = "gold"
    group_field: str = "group"
    extra_body: dict[str, Any] = field(default_factory=dict)
    affinity: bool = True

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        for name, least in (("reasoning_tokens", 0), ("attempts", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise JudgingConfigError(f"{name} must be an integer >= {least}, got {value!r}")


@dataclass
class PairwiseOptions(JudgingOptions):
    """Pairwise options: `both_orders` shows each pair as (a, b) and as (b, a)."""

    both_orders: bool = True


@dataclass
class ScoreOptions(JudgingOptions):
    """Score options: `scale` is the inclusive integer range (low, high)."""

    scale: tuple[int, int] = (1, 10)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.scale = check_scale(self.scale)


@dataclass
class ClassifyOptions(JudgingOptions):
    """Classify options: the labels, and optional descriptions shown in the prompt."""

    labels: list[str] = field(default_factory=lambda: ["correct", "incorrect"])
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_labels(self.labels)
        unknown = sorted(set(self.descriptions) - set(self.labels))
        if unknown:
            raise JudgingConfigError(f"descriptions for unknown label(s): {', '.join(unknown)}")


def parse_scale(spec: str) -> tuple[int, int]:
    """'1-10' -> (1, 10); negative ends allowed ('-2-2'). Raises JudgingConfigError."""
    match = re.fullmatch(r"\s*(-?\d+)\s*-\s*(-?\d+)\s*", spec)
    if not match:
        raise JudgingConfigError(f"--scale {spec!r}: expected LOW-HIGH integers, e.g. 1-10")
    return check_scale((int(match.group(1)), int(match.group(2))), spec)


def parse_labels(spec: str) -> tuple[list[str], dict[str, str]]:
    """'correct,incorrect' or 'safe=no harm;unsafe=could cause harm' -> (labels, descriptions).

    Labels are separated by ';' when any description is given, else by ','.
    """
    parts = spec.split(";") if "=" in spec else spec.split(",")
    labels, descriptions = [], {}
    for part in parts:
        name, _, description = part.partition("=")
        name = name.strip()
        labels.append(name)
        if description.strip():
            descriptions[name] = description.strip()
    check_labels(labels)
    return labels, descriptions


def check_labels(labels: list[str]) -> None:
    """Raise JudgingConfigError unless there are two or more distinct, clean labels."""
    if len(labels) < 2:
        raise JudgingConfigError(f"need at least two labels, got {labels!r}")
    for label in labels:
        if not label or label != label.strip() or "\n" in label:
            raise JudgingConfigError(f"label {label!r}: must be non-empty, without surrounding "
                                     "or line-breaking white space")
    if len(set(labels)) != len(labels):
        raise JudgingConfigError(f"duplicate labels in {labels!r}")


@dataclass(frozen=True)
class Item:
    """One parsed input line: the template's values plus what the protocol needs."""

    id: str
    values: dict[str, str]
    answers: tuple[str, ...] = ()  # pairwise: (answer_a, answer_b)
    gold: Any = None
    group: str | None = None
    model_a: str | None = None
    model_b: str | None = None


def _optional_str(record: dict[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise FieldError(key, f"must be a string, got {type(value).__name__}")
    return str(value)


class _Protocol:
    """Shared plumbing of the pairwise, score and classify tasks."""

    name: ClassVar[str]
    mode: ClassVar[str]
    key = "id"
    kind = "llm"
    system_prompt: ClassVar[str]
    prefill: ClassVar[str]
    provided: ClassVar[tuple[str, ...]] = ()

    verdict_fields: ClassVar[tuple[str, ...]]
    options: JudgingOptions

    def __init__(self, options: JudgingOptions):
        self.options = options
        self.template = options.template or default_template(self.mode,
                                                             reference=options.reference)
        check_template(self.template, "template")

    def item_id(self, item: Item) -> str:
        """The item's id (the output key)."""
        return item.id

    async def process(self, clients: Any, item: Item) -> dict[str, Any]:
        """One output line, through `clients.openai` (the workflow core's entry point).

        The reasoning is capped so the verdict request fits `clients.max_model_len` (tokens,
        from the endpoints' registry entries) when the core knows it.
        """
        return await self.judge(clients.openai, item,
                                max_model_len=getattr(clients, "max_model_len", None))

    async def judge(self, client: openai.AsyncOpenAI, item: Item,
                    max_model_len: int | None = None) -> dict[str, Any]:
        """One output line for one item; request and answer errors become its `error`.

        `max_model_len` (tokens; None: unknown) is the context the requests must fit.
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A plain description; `task_from_dict` rebuilds the task from it."""
        return {"task": self.name, "options": asdict(self.options)}

    def config(self) -> dict[str, Any]:
        """What the verdicts depend on (every option but `attempts`), in its JSON form.

        The workflow core fingerprints it in OUT.parts/config.json; being JSON already, the
        rerun's configuration compares equal to the stored one (a scale tuple is a list).
        """
        options = asdict(self.options)
        options.pop("attempts", None)
        return json_form({"task": self.name, **options})

    def error_result(self, item: Item, message: str) -> dict[str, Any]:
        """The output line of an item whose handling failed with `message` (verdicts null)."""
        return self._failed(item, message, **dict.fromkeys(self.verdict_fields))

    def needs_model(self) -> bool:
        """True until a model is named or bound."""
        return self.options.model is None

    def bind_model(self, model: str) -> None:
        """Name the served model every request asks for."""
        self.options.model = model

    def _key(self, name: str) -> str:
        return self.options.field_map.get(name, name)

    def _base(self, record: dict[str, Any]) -> tuple[str, dict[str, str], str | None]:
        item_id = require_str(record, "id")
        values = item_fields(record, self.template, provided=self.provided,
                             field_map=self.options.field_map)
        group = _optional_str(record, self._key(self.options.group_field))
        return item_id, values, group

    def messages(self, values: dict[str, str]) -> list[dict[str, str]]:
        system = self.system_prompt if self.options.system_prompt is None \
            else self.options.system_prompt
        prompt = render(self.template, values)
        return ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]

    def settings(self, item: Item) -> StepSettings:
        return StepSettings(
            model=self.options.model or "", temperature=self.options.temperature,
            reasoning_tokens=self.options.reasoning_tokens, prefill=self.prefill,
            extra_body=dict(self.options.extra_body),
            headers=affinity_headers(self.name, item.id) if self.options.affinity else {})

    async def _decide(self, client: openai.AsyncOpenAI, item: Item, values: dict[str, str],
                      labels: list[str], max_model_len: int | None
                      ) -> tuple[Decision | None, str | None]:
        """One decision among `labels` for the prompt filled with `values` (see decide)."""
        return await decide_with_retries(client, self.messages(values), labels,
                                         self.settings(item), self.options.attempts,
                                         max_model_len)

    def _gold_or_reference(self, record: dict[str, Any],
                           fits: Callable[[Any], bool]) -> tuple[Any, str]:
        """The raw gold answer and its field: the gold field, else a `reference` that `fits`."""
        raw = record.get(self.options.gold_field)
        if raw is None and fits(record.get("reference")):
            return record["reference"], "reference"
        return raw, self.options.gold_field

    @staticmethod
    def _line(item: Item, result: dict[str, Any], answer: Any,
              usage: dict[str, int]) -> dict[str, Any]:
        """`result` with `gold`/`correct` (when the item has a gold answer), `usage` (tokens)."""
        if item.gold is not None:
            result["gold"] = item.gold
            result["correct"] = answer == item.gold
        result.update(usage=usage, error=None)
        return result

    def _failed(self, item: Item, error: str | None, **empty: Any) -> dict[str, Any]:
        return {"id": item.id, "mode": self.mode, **empty, "reasoning": None, "error": error}


PAIR_LABELS = ["A", "B", "tie"]


class PairwiseTask(_Protocol):
    """Two answers to one question; verdict A, B or tie, by default in both orders.

    Both orders: the pair is shown as (a, b) and as (b, a). When the two verdicts disagree
    (a flip "A then A" = position bias, or "a then tie") the item counts as a tie with
    `consistent: false`; `flipped: true` marks the strict case where each order picked a
    different answer. Both requests of an order, and both orders, share one affinity key.
    """

    name = "judge-pairwise"
    mode = "pairwise"
    system_prompt = PAIRWISE_SYSTEM_PROMPT
    prefill = "Let me compare the two answers."
    provided = ("answer_a", "answer_b")
    verdict_fields = ("winner",)
    options: PairwiseOptions

    def __init__(self, options: PairwiseOptions | None = None):
        super().__init__(options or PairwiseOptions())
        missing = [f for f in ("answer_a", "answer_b") if f not in template_fields(self.template)]
        if missing:
            raise JudgingConfigError(f"a pairwise template must show both answers: add "
                                     f"{' and '.join('{' + f + '}' for f in missing)}")

    def parse(self, record: dict[str, Any]) -> Item:
        """Check one input line (FieldError naming the field) and keep what the prompt needs."""
        item_id, values, group = self._base(record)
        answers = tuple(require_str(record, self._key(name), allow_empty=True)
                        for name in ("answer_a", "answer_b"))
        gold = None
        raw_gold = record.get(self.options.gold_field)
        if raw_gold is not None:
            gold = str(raw_gold).strip().lower() if isinstance(raw_gold, str) else None
            if gold not in ("a", "b", "tie"):
                raise FieldError(self.options.gold_field, f"must be 'a', 'b' or 'tie', got "
                                                          f"{raw_gold!r}")
        return Item(item_id, values, answers, gold, group,
                    _optional_str(record, self._key("model_a")),
                    _optional_str(record, self._key("model_b")))

    async def judge(self, client: openai.AsyncOpenAI, item: Item,
                    max_model_len: int | None = None) -> dict[str, Any]:
        """Judge the pair in each order; combine the verdicts (disagreement: a tie)."""
        orders = ["ab", "ba"] if self.options.both_orders else ["ab"]
        verdicts = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        for order in orders:
            shown = {"a": item.answers[0], "b": item.answers[1]}
            values = {**item.values, "answer_a": shown[order[0]], "answer_b": shown[order[1]]}
            decision, error = await self._decide(client, item, values, PAIR_LABELS,
                                                  max_model_len)
            if decision is None:
                return self._failed(item, error, winner=None)
            verdicts.append(pair_verdict(order, decision))
            for k in usage:
                usage[k] += decision.usage[k]
        winner, consistent, flipped = combine_orders([v["winner"] for v in verdicts])
        result: dict[str, Any] = {
            "id": item.id, "mode": self.mode, "winner": winner, "consistent": consistent,
            "flipped": flipped, "probs": _mean_probs([v["probs"] for v in verdicts]),
            "verdicts": verdicts, "reasoning": verdicts[0]["reasoning"],
            "model_a": item.model_a, "model_b": item.model_b, "group": item.group,
        }
        return self._line(item, result, winner, usage)


def pair_verdict(order: str, decision: Decision) -> dict[str, Any]:
    """One order's verdict in terms of the original answers a and b."""
    by_position = {"A": order[0], "B": order[1], "tie": "tie"}
    probs = None
    if decision.probs is not None:
        probs = {by_position[label]: p for label, p in decision.probs.items()}
    return {"order": order, "label": decision.label, "winner": by_position[decision.label],
            "probs": probs, "reasoning": decision.reasoning}


def combine_orders(winners: list[str]) -> tuple[str, bool, bool]:
    """(winner, consistent, flipped): disagreeing orders count as a tie."""
    consistent = len(set(winners)) == 1
    flipped = set(winners) == {"a", "b"}
    return (winners[0] if consistent else "tie"), consistent, flipped


def _mean_probs(all_probs: list[dict[str, float] | None]) -> dict[str, float] | None:
    present = [p for p in all_probs if p is not None]
    if not present:
        return None
    keys = sorted({k for p in present for k in p})
    return {k: sum(p.get(k, 0.0) for p in present) / len(present) for k in keys}


class ScoreTask(_Protocol):
    """One answer graded on an integer scale; the chosen score and the expected score."""

    name = "judge-score"
    mode = "score"
    system_prompt = SCORE_SYSTEM_PROMPT
    prefill = "Let me assess the answer."
    provided = ("scale_min", "scale_max")
    verdict_fields = ("score", "expected_score")
    options: ScoreOptions

    def __init__(self, options: ScoreOptions | None = None):
        super().__init__(options or ScoreOptions())
        low, high = self.options.scale
        self.labels = [str(v) for v in range(low, high + 1)]

    def parse(self, record: dict[str, Any]) -> Item:
        """Check one input line (FieldError naming the field) and keep what the prompt needs."""
        item_id, values, group = self._base(record)
        values.update(scale_min=self.labels[0], scale_max=self.labels[-1])
        raw, source = self._gold_or_reference(record, _is_int)
        gold = None
        if raw is not None:
            if not _is_int(raw) or str(raw) not in self.labels:
                raise FieldError(source, f"must be an integer from {self.labels[0]} to "
                                         f"{self.labels[-1]}, got {raw!r}")
            gold = int(raw)
        return Item(item_id, values, gold=gold, group=group)

    async def judge(self, client: openai.AsyncOpenAI, item: Item,
                    max_model_len: int | None = None) -> dict[str, Any]:
        """Reason, choose a score, and weigh the scale by the label probabilities."""
        decision, error = await self._decide(client, item, item.values, self.labels,
                                              max_model_len)
        if decision is None:
            return self._failed(item, error, score=None, expected_score=None)
        score = int(decision.label)
        result: dict[str, Any] = {
            "id": item.id, "mode": self.mode, "score": score,
            "expected_score": (round(expected_value(decision.probs), 4)
                               if decision.probs is not None else None),
            "probs": _rounded(decision.probs), "reasoning": decision.reasoning,
            "group": item.group,
        }
        return self._line(item, result, score, decision.usage)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rounded(probs: dict[str, float] | None) -> dict[str, float] | None:
    return None if probs is None else {k: round(v, 6) for k, v in probs.items()}


class ClassifyTask(_Protocol):
    """One answer put into one of the user's labels; the label and its probability."""

    name = "judge-classify"
    mode = "classify"
    system_prompt = CLASSIFY_SYSTEM_PROMPT
    prefill = "Let me check the answer."
    provided = ("label_list", "labels")
    verdict_fields = ("label", "probability")
    options: ClassifyOptions

    def __init__(self, options: ClassifyOptions | None = None):
        super().__init__(options or ClassifyOptions())
        described = self.options.descriptions
        self.label_list = "\n".join(
            f"- {label}: {described[label]}" if label in described else f"- {label}"
            for label in self.options.labels)

    def parse(self, record: dict[str, Any]) -> Item:
        """Check one input line (FieldError naming the field) and keep what the prompt needs."""
        item_id, values, group = self._base(record)
        values.update(label_list=self.label_list, labels=", ".join(self.options.labels))
        raw, source = self._gold_or_reference(record, lambda ref: ref in self.options.labels)
        if raw is not None and raw not in self.options.labels:
            raise FieldError(source, f"must be one of {', '.join(self.options.labels)}, "
                                     f"got {raw!r}")
        return Item(item_id, values, gold=raw, group=group)

    async def judge(self, client: openai.AsyncOpenAI, item: Item,
                    max_model_len: int | None = None) -> dict[str, Any]:
        """Reason, then choose one label; its probability among the labels."""
        decision, error = await self._decide(client, item, item.values,
                                             list(self.options.labels), max_model_len)
        if decision is None:
            return self._failed(item, error, label=None, probability=None)
        probs = _rounded(decision.probs)
        result: dict[str, Any] = {
            "id": item.id, "mode": self.mode, "label": decision.label,
            "probability": probs.get(decision.label) if probs else None, "probs": probs,
            "reasoning": decision.reasoning, "group": item.group,
        }
        return self._line(item, result, decision.label, decision.usage)


class BestOfTask(JudgeTask):
    """Today's judge (`nerschat.workflows.judge`: pick the best of N candidates).

    The workflow core's `JudgeTask`, plus the prefix-affinity header on its requests and
    `"mode": "best-of"` on each line.
    """

    name = "judge-best-of"
    mode = "best-of"

    def __init__(self, options: JudgeOptions | None = None, affinity: bool = True):
        super().__init__(options)
        check_temperature(self.options.temperature)
        check_template(self.options.template, "template")
        self.affinity = affinity

    async def process(self, clients: Any, item: JudgeItem) -> dict[str, Any]:
        """One output line, through `clients.openai` (the workflow core's entry point).

        The reasoning is capped so the verdict request fits `clients.max_model_len` (tokens,
        from the endpoints' registry entries) when the core knows it.
        """
        return await self.judge(clients.openai, item,
                                max_model_len=getattr(clients, "max_model_len", None))

    async def judge(self, client: openai.AsyncOpenAI, item: JudgeItem,
                    max_model_len: int | None = None) -> dict[str, Any]:
        """Today's judge line for one item, with the affinity header on its requests."""
        if self.affinity:
            client = client.with_options(default_headers=affinity_headers(self.name, item.id))
        result = await judge_item(client, item, self.options, max_model_len=max_model_len)
        return {"id": result.pop("id"), "mode": self.mode, **result}

    def to_dict(self) -> dict[str, Any]:
        """A plain description; `task_from_dict` rebuilds the task from it."""
        return {"task": self.name, "options": asdict(self.options), "affinity": self.affinity}

    def config(self) -> dict[str, Any]:
        """What the verdicts depend on (every option but `attempts`), in its JSON form."""
        return json_form(super().config())

    def error_result(self, item: JudgeItem, message: str) -> dict[str, Any]:
        """Today's failed judge line (verdict fields null) with `"mode": "best-of"`."""
        result = super().error_result(item, message)
        return {"id": result.pop("id"), "mode": self.mode, **result}

    def needs_model(self) -> bool:
        """True until a model is named or bound."""
        return self.options.model is None


JudgingTask = PairwiseTask | ScoreTask | ClassifyTask | BestOfTask


def json_form(value: dict[str, Any]) -> dict[str, Any]:
    """`value` as JSON reads it back (tuples become lists, keys strings): how it is stored."""
    result: dict[str, Any] = json.loads(json.dumps(value))
    return result


def make_task(mode: str, **options: Any) -> JudgingTask:
    """The task for `mode` ('best-of', 'pairwise', 'score', 'classify') with its options.

    For best-of, options are `JudgeOptions` fields plus `affinity`; `template` None keeps
    today's default. Raises JudgingConfigError for an unknown mode or option.
    """
    try:
        if mode == "best-of":
            affinity = bool(options.pop("affinity", True))
            if options.get("system_prompt") is None:
                options["system_prompt"] = DEFAULT_SYSTEM_PROMPT
            if options.get("template") is None:
                options.pop("template", None)
            return BestOfTask(JudgeOptions(**options), affinity=affinity)
        if mode == "pairwise":
            return PairwiseTask(PairwiseOptions(**options))
        if mode == "score":
            if isinstance(options.get("scale"), str):
                options["scale"] = parse_scale(options["scale"])
            return ScoreTask(ScoreOptions(**options))
        if mode == "classify":
            if isinstance(options.get("labels"), str):
                labels, descriptions = parse_labels(options["labels"])
                options["labels"] = labels
                options["descriptions"] = {**descriptions, **options.get("descriptions", {})}
            return ClassifyTask(ClassifyOptions(**options))
    except TypeError as exc:
        raise JudgingConfigError(f"judging mode {mode}: {exc}") from None
    except ValueError as exc:
        if isinstance(exc, UsageError):  # already one line naming the option
            raise
        raise JudgingConfigError(f"judging mode {mode}: {exc}") from None
    raise JudgingConfigError(f"unknown judging mode {mode!r}; choose one of best-of, pairwise, "
                             "score, classify")


TASK_MODES = {"judge-best-of": "best-of", "judge-pairwise": "pairwise",
              "judge-score": "score", "judge-classify": "classify"}


def task_from_dict(spec: dict[str, Any]) -> JudgingTask:
    """Rebuild a judging task from `task.to_dict()` (e.g. on a Parsl worker)."""
    mode = TASK_MODES.get(spec.get("task", ""))
    if mode is None:
        raise ValueError(f"not a judging task: {spec.get('task')!r}")
    options = dict(spec["options"])
    if mode == "best-of":
        options["affinity"] = spec.get("affinity", True)
    return make_task(mode, **options)
