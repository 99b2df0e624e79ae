"""LLM-as-a-judge: let the model reason, then force it to name exactly one candidate.

Step 1 prefills the start of the judge's answer and lets it continue (chain of thought via
`continue_final_message`). Step 2 appends "Final answer: " and constrains the next token(s)
to the candidate labels (`structured_outputs.choice`), asking for log-probabilities.
vLLM silently ignores constraint fields it does not know, so the answer is checked against
the labels and retried, or recorded as a per-item error.

Plain functions, no Parsl: the orchestration wraps them as apps.
"""

from __future__ import annotations

import asyncio
import math
import random
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

from nerschat.client.chat import create_chat
from nerschat.errors import FailureError
from nerschat.judging.budget import ContextBudget, is_context_error, server_message
from nerschat.workflows.inputs import FieldError, require_str

T = TypeVar("T")

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
    """One item to judge: its id, candidate answers, and the other fields the template may use."""

    id: str
    answers: list[str]
    fields: dict[str, Any]  # everything the template may use (question, context, ...)


@dataclass
class JudgeOptions:
    """How the judge asks: model, prompts, sampling, order shuffling and retries.

    `reasoning_tokens` is a token budget (>= 0); `attempts` is per item (>= 1); ValueError
    otherwise.
    """

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
    """A JudgeItem from one record `{id, answers, ...}`; raises FieldError for a bad field.

    Refused: a missing or non-string id, missing, empty or non-string answers, a `candidates`
    field (it shadows the template's), a `reference` that is not an in-range 0-based index.
    """
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
    if "candidates" in record:
        raise FieldError("candidates", "shadows the template's {candidates} field: rename it")
    if "reference" in record:
        reference = record["reference"]
        if not isinstance(reference, int) or isinstance(reference, bool):
            raise FieldError("reference", f"must be the index of the right answer, got "
                                          f"{type(reference).__name__}")
        if not 0 <= reference < len(answers):
            raise FieldError("reference", f"{reference} is out of range for {len(answers)} "
                                          "answers (0-based)")
    fields = {k: v for k, v in record.items() if k not in ("id", "answers")}
    return JudgeItem(item_id, list(answers), fields)


def template_fields(template: str) -> list[str]:
    """Names of the format fields a template uses (besides {candidates})."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    except ValueError as exc:
        raise FieldError(None, f"prompt template cannot be filled: {exc}") from None
    return [n.split(".")[0].split("[")[0] for n in names if n != "candidates"]


def check_template(item: JudgeItem, template: str) -> None:
    """Raise FieldError naming a template field the item lacks or gives as a non-text."""
    for name in template_fields(template):
        if name not in item.fields:
            raise FieldError(name, "used by the prompt template but missing")
        value = item.fields[name]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise FieldError(name, f"used by the prompt template: must be a string or number, "
                                   f"got {type(value).__name__}")
    try:
        template.format(candidates="", **item.fields)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise FieldError(None, f"prompt template cannot be filled: {exc}") from None


def candidate_order(item: JudgeItem, options: JudgeOptions) -> list[int]:
    """Positions shown to the model; seeded per item, so a resumed run shows the same order."""
    order = list(range(len(item.answers)))
    if options.shuffle:
        random.Random(f"{options.seed}:{item.id}").shuffle(order)
    return order


def build_messages(item: JudgeItem, order: list[int], options: JudgeOptions) -> list[dict[str, str]]:
    """Chat messages: the system prompt (if any), then the template filled with the answers.

    `order` lists answer indexes; they are shown under labels A, B, ... in that order. Raises
    KeyError if the template names a field the item lacks (check_template catches that first).
    """
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


class ContextTooLong(FailureError):
    """The prompt does not fit the model's context (max_model_len)."""


async def _judge_once(client: openai.AsyncOpenAI, model: str, item: JudgeItem, order: list[int],
                      options: JudgeOptions, reasoning_tokens: int,
                      budget: ContextBudget | None = None) -> dict[str, Any]:
    labels = list(string.ascii_uppercase[: len(order)])
    messages: list[Any] = build_messages(item, order, options)
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    reasoning = ""
    if reasoning_tokens:
        step1 = await create_chat(client, {
            "model": model,
            "messages": [*messages, {"role": "assistant", "content": REASONING_PREFILL}],
            "max_tokens": reasoning_tokens,
            "temperature": options.temperature,
            "continue_final_message": True, "add_generation_prompt": False,
            **options.extra_body,
        })
        reasoning = (_first_choice(step1).message.content or "").strip()
        _add_usage(usage, step1.usage)
        if budget is not None:
            reasoning = budget.fit_reasoning(reasoning, step1.usage)
    prefill = f"{REASONING_PREFILL} {reasoning}".rstrip() + FINAL_PREFIX
    step2 = await create_chat(client, {
        "model": model,
        "messages": [*messages, {"role": "assistant", "content": prefill}],
        "max_tokens": 2,
        "temperature": options.temperature,
        "logprobs": True,
        "top_logprobs": min(20, len(labels)),
        "continue_final_message": True, "add_generation_prompt": False,
        "structured_outputs": {"choice": labels}, **options.extra_body,
    })
    _add_usage(usage, step2.usage)
    choice = (_first_choice(step2).message.content or "").strip()
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


class BadReply(FailureError):
    """The server's reply is not a chat completion."""


def _first_choice(response: Any) -> Any:
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices or getattr(choices[0], "message", None) is None:
        raise BadReply(f"reply is not a chat completion: {str(response)[:80]!r}")
    return choices[0]


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if usage is not None:
        total["prompt_tokens"] += getattr(usage, "prompt_tokens", 0) or 0
        total["completion_tokens"] += getattr(usage, "completion_tokens", 0) or 0


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


RETRY_DELAY = 0.5  # seconds before the second attempt; doubled after each


async def with_attempts(step: Callable[[int], Awaitable[T]], budget: ContextBudget,
                        cap: int, messages: list[dict[str, str]], attempts: int
                        ) -> tuple[T | None, str | None]:
    """(`step(cap)`'s value, None), or (None, one-line error) after up to `attempts` tries.

    The one retry policy of every judging step. `cap` is the reasoning budget in tokens;
    `messages` what the budget's error describes. Transient failures (HTTP
    429 and 5xx, connection errors, replies that are not a completion, an answer outside
    the labels) are retried after a jittered back-off of RETRY_DELAY seconds, doubled after
    each; a context-length refusal is retried with half the reasoning, then none (not counted
    as an attempt), and only then becomes the error, naming the limit; other 4xx stop.
    """
    error = None
    attempt = 0
    while attempt < attempts:
        attempt += 1
        try:
            return await step(cap), None
        except JudgeAnswerError as exc:
            error = f"{exc} (after {attempt} attempt(s))"
        except openai.APIStatusError as exc:
            if is_context_error(exc):
                smaller = budget.after_context_error(cap)
                if smaller is not None:
                    cap = smaller
                    attempt -= 1  # less reasoning is not a failed attempt
                    continue
                error = budget.error(messages, exc)
                break
            error = f"HTTP {exc.status_code}: {server_message(exc)}"
            if exc.status_code < 500 and exc.status_code != 429:
                break  # a bad request stays bad
        except (openai.APIError, BadReply) as exc:
            error = f"{type(exc).__name__}: {str(exc)[:200]}"
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            error = f"bad reply ({type(exc).__name__}: {str(exc)[:160]})"
        if attempt < attempts:
            await asyncio.sleep(RETRY_DELAY * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    return None, error


async def _judge_with_retries(client: openai.AsyncOpenAI, model: str, item: JudgeItem,
                              order: list[int], options: JudgeOptions,
                              max_model_len: int | None = None
                              ) -> tuple[dict[str, Any] | None, str | None]:
    """(verdict, None) or (None, error) after up to `options.attempts` tries (`with_attempts`)."""
    messages = build_messages(item, order, options)
    budget = ContextBudget(max_model_len, answer_tokens=2)
    cap = budget.reasoning_cap(
        [*messages, {"role": "assistant", "content": REASONING_PREFILL}],
        options.reasoning_tokens)
    return await with_attempts(
        lambda reasoning: _judge_once(client, model, item, order, options, reasoning, budget),
        budget, cap, messages, options.attempts)


async def judge_item(client: openai.AsyncOpenAI, item: JudgeItem, options: JudgeOptions,
                     max_model_len: int | None = None) -> dict[str, Any]:
    """One output line for one item; API and answer errors become a per-item `error`.

    The model must be bound (`options.model`); `max_model_len` (tokens) caps the reasoning.
    """
    if not options.model:
        raise ValueError("judge_item needs options.model (resolve the model first)")
    order = candidate_order(item, options)
    orders = [order, list(reversed(order))] if options.both_orders else [order]
    verdicts = []
    for shown in orders:
        verdict, error = await _judge_with_retries(client, options.model, item, shown,
                                                   options, max_model_len)
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
