"""One judgement: reason (prefilled), then a forced choice among labels with probabilities.

The same two steps as `nerschat.workflows.judge`: step 1 prefills the start of the judge's
answer and lets it continue (`continue_final_message`); step 2 appends "Final answer: " and
constrains the answer to the labels (`structured_outputs.choice`) with log-probabilities.
Step 2's prompt extends step 1's, so with prefix caching the second request recomputes only
the reasoning. The answer is checked against the labels (a server that ignores the
constraint answers freely) and retried, or becomes a per-item error. The reasoning is kept
inside the model's context by `nerschat.judging.budget.ContextBudget`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import openai

from nerschat.client.chat import create_chat
from nerschat.judging.budget import ContextBudget
from nerschat.judging.labels import (
    TokenDist,
    known_distributions,
    label_probabilities,
    response_positions,
)
from nerschat.workflows.judge import FINAL_PREFIX, JudgeAnswerError, with_attempts

TOP_LOGPROBS = 20  # vLLM's default --max-logprobs


@dataclass
class Decision:
    """One forced choice: the label, the reasoning before it, label probabilities, tokens."""

    label: str
    reasoning: str
    probs: dict[str, float] | None  # normalised over the labels; None without logprobs
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0,
                                                           "completion_tokens": 0})


@dataclass
class StepSettings:
    """Request settings of one judgement (model, sampling, prefill, extra body, headers)."""

    model: str
    temperature: float = 0.0
    reasoning_tokens: int = 256
    prefill: str = "Let me think it through."
    extra_body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _add_usage(total: dict[str, int], usage: Any) -> None:
    if usage is not None:
        total["prompt_tokens"] += usage.prompt_tokens or 0
        total["completion_tokens"] += usage.completion_tokens or 0


def _continue(messages: list[dict[str, str]], text: str) -> list[Any]:
    return [*messages, {"role": "assistant", "content": text}]


def answer_tokens(labels: list[str]) -> int:
    """The most tokens a forced answer among `labels` takes (a token is at least a character)."""
    return max(len(label) for label in labels) + 1


async def decide(client: openai.AsyncOpenAI, messages: list[dict[str, str]],
                 labels: list[str], settings: StepSettings,
                 budget: ContextBudget | None = None,
                 reasoning_tokens: int | None = None) -> Decision:
    """Reason, then choose one of `labels`. Raises JudgeAnswerError for an answer off the list.

    `reasoning_tokens` (default: the settings') caps step 1; with a `budget`, a reasoning
    that would not leave room for the answer in the context is cut back before step 2.
    """
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    continue_body = {"continue_final_message": True, "add_generation_prompt": False}
    headers = settings.headers or None
    reasoning = ""
    cap = settings.reasoning_tokens if reasoning_tokens is None else reasoning_tokens
    if cap:
        step1 = await create_chat(client, {
            "model": settings.model, "messages": _continue(messages, settings.prefill),
            "max_tokens": cap, "temperature": settings.temperature,
            **continue_body, **settings.extra_body}, headers=headers)
        reasoning = (step1.choices[0].message.content or "").strip()
        _add_usage(usage, step1.usage)
        if budget is not None:
            reasoning = budget.fit_reasoning(reasoning, step1.usage)
    prefill = f"{settings.prefill} {reasoning}".rstrip() + FINAL_PREFIX
    step2 = await create_chat(client, {
        "model": settings.model, "messages": _continue(messages, prefill),
        "max_tokens": answer_tokens(labels),
        "temperature": settings.temperature, "logprobs": True, "top_logprobs": TOP_LOGPROBS,
        **continue_body, "structured_outputs": {"choice": labels},
        **settings.extra_body}, headers=headers)
    _add_usage(usage, step2.usage)
    answer = (step2.choices[0].message.content or "").strip()
    if answer not in labels:
        raise JudgeAnswerError(f"model answered {answer[:40]!r}, not one of "
                               f"{', '.join(labels)}")

    async def probe(prefix: str) -> TokenDist | None:
        reply = await create_chat(client, {
            "model": settings.model, "messages": _continue(messages, prefill + prefix),
            "max_tokens": 1, "temperature": settings.temperature, "logprobs": True,
            "top_logprobs": TOP_LOGPROBS, **continue_body, **settings.extra_body},
            headers=headers)
        _add_usage(usage, reply.usage)
        positions = response_positions(reply)
        return positions[0][1] if positions else None

    positions = response_positions(step2)
    probs = None
    if positions:
        probs = await label_probabilities(labels, known_distributions(positions), probe)
    return Decision(answer, reasoning, probs, usage)


async def decide_with_retries(client: openai.AsyncOpenAI, messages: list[dict[str, str]],
                              labels: list[str], settings: StepSettings, attempts: int,
                              max_model_len: int | None = None
                              ) -> tuple[Decision | None, str | None]:
    """(decision, None), or (None, one-line error) after up to `attempts` tries.

    The retry policy is the judge's (`nerschat.workflows.judge.with_attempts`). With
    `max_model_len` (tokens), the reasoning is capped so the verdict still fits; a
    context-length refusal is retried with half the reasoning, then none, and only then
    becomes the item's error, naming the limit.
    """
    budget = ContextBudget(max_model_len, answer_tokens(labels))
    cap = budget.reasoning_cap(_continue(messages, settings.prefill), settings.reasoning_tokens)
    return await with_attempts(
        lambda reasoning: decide(client, messages, labels, settings, budget, reasoning),
        budget, cap, messages, attempts)
