"""LLM-as-a-judge: let the model reason, then force it to name exactly one candidate.

Step 1 prefills the start of the judge's answer and lets it continue (chain of thought via
`continue_final_message`). Step 2 appends "Final answer: " and constrains the next token(s)
to the candidate labels (`structured_outputs.choice`), asking for log-probabilities.
vLLM silently ignores constraint fields it does not know, so the answer is checked against
the labels and retried, or recorded as a per-item error.

Plain functions, no Parsl: the orchestration wraps them as apps.
"""

from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass, field
from typing import Any

import openai

from nerschat.errors import FailureError
from nerschat.workflows.inputs import FieldError, require_str

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful, impartial judge. Compare the candidate answers to the question on "
    "correctness first, then completeness and clarity. Ignore the order in which they appear."
)
DEFAULT_TEMPLATE = (
    "Question:\n{question}\n\nCandidate answers:\n{candidates}\n\n"
    "Which candidate answers the question best? Reason briefly, then name one letter."
)
REASONING_PREFILL = "Let me compare the candidates one by one."
FINAL_PREFIX = "\nFinal answer: "
MAX_CANDIDATES = len(string.ascii_uppercase)


@dataclass(frozen=True)
class JudgeItem:
    id: str
    answers: list[str]
    fields: dict[str, Any]  # everything the template may use (question, context, ...)


@dataclass
class JudgeOptions:
    model: str | None = None
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    template: str = DEFAULT_TEMPLATE
    temperature: float = 0.0
    reasoning_tokens: int = 256
    shuffle: bool = False
    seed: int = 0
    both_orders: bool = False
    attempts: int = 3
    extra_body: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.reasoning_tokens < 0:
            raise ValueError(f"reasoning_tokens must be >= 0, got {self.reasoning_tokens}")
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")


def parse_judge_item(record: dict[str, Any]) -> JudgeItem:
    item_id = require_str(record, "id")
    if "answers" not in record:
        raise FieldError("answers", "missing")
    answers = record["answers"]
    if not isinstance(answers, list):
        raise FieldError("answers", f"must be a list of strings, got {type(answers).__name__}")
    if not answers:
        raise FieldError("answers", "empty candidate list")
    if len(answers) > MAX_CANDIDATES:
        raise FieldError("answers", f"{len(answers)} candidates; at most {MAX_CANDIDATES}")
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise FieldError(f"answers[{i}]", f"must be a string, got {type(answer).__name__}")
    fields = {k: v for k, v in record.items() if k not in ("id", "answers")}
    return JudgeItem(item_id, list(answers), fields)


def check_template(item: JudgeItem, template: str) -> None:
    """Raise FieldError naming a template field the item lacks."""
    try:
        template.format(candidates="", **item.fields)
    except KeyError as exc:
        raise FieldError(str(exc.args[0]), "used by the prompt template but missing") from None
    except (IndexError, ValueError) as exc:
        raise FieldError(None, f"prompt template cannot be filled: {exc}") from None


def candidate_order(item: JudgeItem, options: JudgeOptions) -> list[int]:
    """Positions shown to the model; seeded per item, so a resumed run shows the same order."""
    order = list(range(len(item.answers)))
    if options.shuffle:
        random.Random(f"{options.seed}:{item.id}").shuffle(order)
    return order


def build_messages(item: JudgeItem, order: list[int], options: JudgeOptions) -> list[dict[str, str]]:
    labels = string.ascii_uppercase
    candidates = "\n".join(f"{labels[pos]}. {item.answers[i]}" for pos, i in enumerate(order))
    prompt = options.template.format(candidates=candidates, **item.fields)
    messages = []
    if options.system_prompt:
        messages.append({"role": "system", "content": options.system_prompt})
    messages.append({"role": "user", "content": prompt})
    return messages


class JudgeAnswerError(FailureError):
    """The model's final answer is not one of the labels (constraint ignored?)."""


async def _judge_once(client: openai.AsyncOpenAI, model: str, item: JudgeItem, order: list[int],
                      options: JudgeOptions) -> dict[str, Any]:
    labels = list(string.ascii_uppercase[: len(order)])
    messages = build_messages(item, order, options)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    reasoning = ""
    if options.reasoning_tokens:
        step1 = await client.chat.completions.create(
            model=model,
            messages=[*messages, {"role": "assistant", "content": REASONING_PREFILL}],
            max_tokens=options.reasoning_tokens,
            temperature=options.temperature,
            extra_body={"continue_final_message": True, "add_generation_prompt": False,
                        **options.extra_body},
        )
        reasoning = (step1.choices[0].message.content or "").strip()
        _add_usage(usage, step1.usage)
    prefill = f"{REASONING_PREFILL} {reasoning}".rstrip() + FINAL_PREFIX
    step2 = await client.chat.completions.create(
        model=model,
        messages=[*messages, {"role": "assistant", "content": prefill}],
        max_tokens=2,
        temperature=options.temperature,
        logprobs=True,
        top_logprobs=min(20, len(labels)),
        extra_body={"continue_final_message": True, "add_generation_prompt": False,
                    "structured_outputs": {"choice": labels}, **options.extra_body},
    )
    _add_usage(usage, step2.usage)
    choice = (step2.choices[0].message.content or "").strip()
    if choice not in labels:
        raise JudgeAnswerError(f"model answered {choice[:40]!r}, not one of {', '.join(labels)}")
    position = labels.index(choice)
    index = order[position]
    return {
        "index": index,
        "label": choice,
        "order": order,
        "reasoning": reasoning,
        "logprobs": _label_logprobs(step2, labels, order),
        "usage": usage,
    }


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if usage is not None:
        total["prompt_tokens"] += usage.prompt_tokens or 0
        total["completion_tokens"] += usage.completion_tokens or 0


def _label_logprobs(response: Any, labels: list[str], order: list[int]) -> dict[str, float] | None:
    """Log-probability of each candidate (keyed by its original index) at the answer token."""
    logprobs = response.choices[0].logprobs
    if logprobs is None or not logprobs.content:
        return None
    first = logprobs.content[0]
    found = {alt.token.strip(): alt.logprob for alt in (first.top_logprobs or [])}
    found.setdefault(first.token.strip(), first.logprob)
    result = {}
    for position, label in enumerate(labels):
        value = found.get(label)
        if value is not None and math.isfinite(value):
            result[str(order[position])] = value
    return result or None


async def _judge_with_retries(client: openai.AsyncOpenAI, model: str, item: JudgeItem,
                              order: list[int], options: JudgeOptions
                              ) -> tuple[dict[str, Any] | None, str | None]:
    """(verdict, None) or (None, error) after up to `options.attempts` tries."""
    error = None
    for attempt in range(options.attempts):
        try:
            return await _judge_once(client, model, item, order, options), None
        except JudgeAnswerError as exc:
            error = f"{exc} (after {attempt + 1} attempt(s))"
        except openai.APIStatusError as exc:
            error = f"HTTP {exc.status_code}: {_message(exc)}"
            if exc.status_code < 500:
                break  # a bad request stays bad
        except openai.APIError as exc:
            error = f"{type(exc).__name__}: {exc}"
    return None, error


async def judge_item(client: openai.AsyncOpenAI, item: JudgeItem,
                     options: JudgeOptions) -> dict[str, Any]:
    """One output line for one item; API and answer errors become a per-item `error`."""
    order = candidate_order(item, options)
    orders = [order, list(reversed(order))] if options.both_orders else [order]
    verdicts = []
    for shown in orders:
        verdict, error = await _judge_with_retries(client, options.model or "", item, shown,
                                                   options)
        if verdict is None:
            return {"id": item.id, "answer": None, "index": None, "reasoning": None,
                    "error": error}
        verdicts.append(verdict)
    first = verdicts[0]
    agreement = all(v["index"] == first["index"] for v in verdicts)
    index = first["index"] if agreement else None
    result: dict[str, Any] = {
        "id": item.id,
        "answer": item.answers[index] if index is not None else None,
        "index": index,
        "label": first["label"],
        "reasoning": first["reasoning"],
        "logprobs": first["logprobs"],
        "order": first["order"],
        "usage": {k: sum(v["usage"][k] for v in verdicts) for k in first["usage"]},
        "error": None,
    }
    reference = item.fields.get("reference")
    if isinstance(reference, int) and not isinstance(reference, bool):
        result["reference"] = reference  # the gold candidate, when the input has one
        result["correct"] = index == reference
    if options.both_orders:
        result["agreement"] = agreement
        result["verdicts"] = [{"order": v["order"], "index": v["index"], "label": v["label"],
                               "reasoning": v["reasoning"]} for v in verdicts]
    return result


def _message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))[:300]
        return str(error)[:300]
    return str(exc)[:300]
