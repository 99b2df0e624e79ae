"""How much reasoning a two-step judgement can afford inside the model's context.

Every judging mode asks twice: step 1 sends the prompt P (chat messages plus the prefilled
start of the answer) and lets the model reason for up to R tokens; step 2 sends P, the
reasoning and "Final answer: " again and asks for the answer (A tokens; the probes for label
probabilities extend that prompt by at most A more). So the verdict fits only if
P + R + FINAL_OVERHEAD + A <= max_model_len, and a server that clamps step 1's max_tokens to
its context (vLLM does) happily returns a reasoning that makes step 2 fail.

`ContextBudget` keeps that sum inside `max_model_len` (tokens, from the endpoints' registry
entries) in three ways, used alike by best-of, pairwise, score and classify:

1. before step 1, R is capped from a client-side estimate of P that is high on purpose
   (`estimate_tokens`: no tokenizer on the client);
2. after step 1, the server's own counts (`usage`) replace the estimate, and a reasoning
   that would still not fit is cut back (`fit_reasoning`);
3. if the server still refuses for context length (`is_context_error`), the judgement is
   retried with half the reasoning, then none (`after_context_error`); only when even that
   fails is the item's error a context error, naming the limit and the prompt's size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import openai

PER_MESSAGE = 8  # tokens a chat template adds around each message (high)
FINAL_OVERHEAD = 16  # tokens of "Final answer: ", the template's end and re-tokenisation slack
SHRINK_BELOW = 16  # a reasoning cap at or under this many tokens is dropped, not halved
_SINGLE = re.compile(r"[^A-Za-z\s]")  # within ASCII: digits and punctuation
_CONTEXT_WORDS = ("context length", "maximum context", "max_model_len", "too long",
                  "input tokens", "prompt is too long", "exceeds")


def text_tokens(text: str) -> int:
    """A high estimate of the tokens of `text` for common BPE / SentencePiece tokenizers.

    Each ASCII digit or punctuation mark a token (Gemma and others split numbers into
    digits; code is dense in tokens), each run of letters and white space between them at 3
    characters a token (English averages about 4), and non-ASCII text at one token per two
    UTF-8 bytes (a CJK character, three bytes, is usually one token).
    """
    plain = text.encode("ascii", "ignore").decode("ascii")
    non_ascii_bytes = len(text.encode("utf-8", "surrogatepass")) - len(plain)
    runs = _SINGLE.split(plain)
    return (len(runs) - 1) + sum(math.ceil(len(run) / 3) for run in runs) \
        + math.ceil(non_ascii_bytes / 2)


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A high estimate of a chat's prompt tokens (`text_tokens` plus PER_MESSAGE each)."""
    return sum(text_tokens(str(m.get("content") or "")) + PER_MESSAGE for m in messages)


def is_context_error(exc: Exception) -> bool:
    """True if `exc` is a server refusing a request for the model's context length."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in (400, 413, 422):
        return False
    text = server_message(exc).lower()
    return any(word in text for word in _CONTEXT_WORDS)


def server_message(exc: openai.APIStatusError) -> str:
    """The server's own error message (at most 300 characters)."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return str(error.get("message", error))[:300]
        return str(error)[:300]
    return str(exc)[:300]


@dataclass
class ContextBudget:
    """The context budget of one judgement's requests.

    `max_model_len` (tokens; None: unknown, nothing is capped); `answer_tokens`: the most
    tokens the forced answer and its probes add (the longest label's characters + 1).
    """

    max_model_len: int | None
    answer_tokens: int = 2

    def reasoning_cap(self, messages: list[dict[str, Any]], wanted: int) -> int:
        """Reasoning tokens for step 1 (0: none) that leave room for step 2.

        `messages` are step 1's messages (with the prefilled assistant start).
        """
        if self.max_model_len is None or wanted <= 0:
            return max(0, wanted)
        room = self.max_model_len - estimate_tokens(messages) - FINAL_OVERHEAD \
            - self.answer_tokens
        return max(0, min(wanted, room))

    def fit_reasoning(self, reasoning: str, usage: Any) -> str:
        """`reasoning` cut back (at a word) so step 2 fits, by the server's counts of step 1.

        `usage` is step 1's `usage` (prompt_tokens, completion_tokens); without it, or
        without a known limit, the reasoning is kept whole.
        """
        prompt = getattr(usage, "prompt_tokens", None)
        written = getattr(usage, "completion_tokens", None)
        if self.max_model_len is None or not reasoning or not prompt or not written:
            return reasoning
        room = self.max_model_len - prompt - FINAL_OVERHEAD - self.answer_tokens
        if written <= room:
            return reasoning
        if room <= 0:
            return ""
        keep = int(len(reasoning) * room / written * 0.9)  # 10% slack for re-tokenisation
        cut = reasoning[:keep]
        return cut[:cut.rfind(" ")].rstrip() if " " in cut else cut

    @staticmethod
    def after_context_error(cap: int) -> int | None:
        """The next, smaller reasoning cap after a context-length refusal; None: give up."""
        if cap <= 0:
            return None
        return cap // 2 if cap > SHRINK_BELOW else 0

    def error(self, messages: list[dict[str, Any]], exc: openai.APIStatusError) -> str:
        """The item's error once even a judgement without reasoning was refused."""
        limit = f" (max_model_len {self.max_model_len})" if self.max_model_len else ""
        return (f"prompt too long for the model's context{limit}: about "
                f"{estimate_tokens(messages)} prompt tokens estimated, refused even without "
                f"reasoning; HTTP {exc.status_code}: {server_message(exc)}")
