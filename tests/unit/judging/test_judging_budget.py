"""Every judging mode keeps its requests inside a small max_model_len (a fake endpoint)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest

from nerschat.judging import make_task
from nerschat.judging.budget import (
    FINAL_OVERHEAD,
    ContextBudget,
    estimate_tokens,
    is_context_error,
    text_tokens,
)
from nerschat.workflows import judge as judge_module
from nerschat.workflows.judge import with_attempts

# A tokenizer on the expensive side of real ones: a space and up to 5 letters, each digit,
# each non-ASCII character, a space and up to 3 punctuation marks, each white-space run.
_TOKEN = re.compile(r" ?[A-Za-z]{1,5}|\d|[^\x00-\x7f]| ?[^\sA-Za-z\d\x80-\U0010ffff]{1,3}|\s+")

SAMPLES = [
    "The quick brown fox jumps over the lazy dog, twice; then it rests.",
    "internationalization and counterrevolutionaries " * 5,
    "3.14159265358979 1234567890 2026-11-29 12:00:00",
    "id-a9b8c7d6e5f4 0x7fe60b1a68e0 sha256:9f86d081884c7d659a2feaa0c55ad015",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "emoji 😀🎉🚀 and accents: café, naïve, Zürich, Ångström",
    "def f(x):\n    return {'a': [1, 2, 3], 'b': x ** 2}  # comment\n\n\n",
    "!!! ??? ... --- *** ### @@@",
]


def fake_tokens(text: str) -> int:
    return len(_TOKEN.findall(text))


@pytest.mark.parametrize("text", SAMPLES)
def test_prompt_tokens_are_estimated_high(text: str) -> None:
    assert text_tokens(text) >= fake_tokens(text)
    messages = [{"role": "system", "content": text}, {"role": "user", "content": text * 3}]
    assert estimate_tokens(messages) >= sum(fake_tokens(m["content"]) + 4 for m in messages)


@dataclass
class FakeEndpoint:
    """A chat endpoint with a small context: it counts tokens with `fake_tokens` (or, with
    `per_char`, one per character: far above the client's estimate), clamps max_tokens to the
    context like vLLM or (`strict`) refuses a prompt + max_tokens over it like older vLLM."""

    max_model_len: int
    strict: bool = False
    per_char: bool = False
    reasoning_words: int = 400
    requests: list[dict[str, Any]] = field(default_factory=list)

    def count(self, text: str) -> int:
        return len(text) if self.per_char else fake_tokens(text)

    def prompt_tokens(self, body: dict[str, Any]) -> int:
        return sum(self.count(str(m["content"])) + 4 for m in body["messages"])

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        prompt = self.prompt_tokens(body)
        wanted = int(body.get("max_tokens") or 16)
        record = {"prompt": prompt, "max_tokens": wanted, "refused": False,
                  "final": "structured_outputs" in body or wanted == 1, "body": body}
        self.requests.append(record)
        if prompt >= self.max_model_len or (self.strict and prompt + wanted > self.max_model_len):
            record["refused"] = True
            return httpx2.Response(400, json={"error": {
                "message": f"This model's maximum context length is {self.max_model_len} "
                           f"tokens. However, your prompt contains at least {prompt} input "
                           "tokens", "type": "BadRequestError", "code": 400}})
        allowed = min(wanted, self.max_model_len - prompt)
        if record["final"]:
            labels = body.get("structured_outputs", {}).get("choice") or ["A"]
            text, logprobs = labels[0], {"content": [
                {"token": labels[0], "logprob": -0.1, "bytes": None,
                 "top_logprobs": [{"token": t, "logprob": -0.1 - i, "bytes": None}
                                  for i, t in enumerate(labels[:20])]}]}
        else:
            words = [f"step{i}" for i in range(self.reasoning_words)]
            kept: list[str] = []
            while words and self.count(" ".join([*kept, words[0]])) <= allowed:
                kept.append(words.pop(0))
            text, logprobs = " ".join(kept), None
        written = self.count(text)
        reply = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "length",
                              "message": {"role": "assistant", "content": text},
                              "logprobs": logprobs if body.get("logprobs") else None}],
                 "usage": {"prompt_tokens": prompt, "completion_tokens": written,
                           "total_tokens": prompt + written}}
        return httpx2.Response(200, json=reply)

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url="http://judge.test/v1", api_key="k", max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler)))


MODES = ["best-of", "pairwise", "score", "classify"]


def record(mode: str, words: int) -> dict[str, Any]:
    question = " ".join(f"word{i % 10}" for i in range(words))  # 2 fake tokens a word
    if mode == "best-of":
        return {"id": "q", "question": question, "answers": ["yes", "no"]}
    if mode == "pairwise":
        return {"id": "q", "question": question, "answer_a": "yes", "answer_b": "no"}
    return {"id": "q", "question": question, "answer": "yes"}


async def judge(mode: str, endpoint: FakeEndpoint, words: int, max_model_len: int | None,
                **options: Any) -> dict[str, Any]:
    task = make_task(mode, model="m", reasoning_tokens=256, attempts=1, **options)
    item = task.parse(record(mode, words))
    result: dict[str, Any] = await task.judge(endpoint.client(), item,  # type: ignore[arg-type]
                                              max_model_len=max_model_len)
    return result


async def step1_prompt(mode: str, words: int, per_char: bool = False) -> int:
    """The (fake) prompt tokens of the reasoning request, measured without a limit."""
    endpoint = FakeEndpoint(max_model_len=10**6, per_char=per_char)
    await judge(mode, endpoint, words, max_model_len=None)
    return int(endpoint.requests[0]["prompt"])


@pytest.mark.parametrize("mode", MODES)
async def test_reasoning_is_capped_so_the_verdict_fits(mode: str) -> None:
    limit = await step1_prompt(mode, 150) + 250  # room for less than the 256 asked for
    endpoint = FakeEndpoint(max_model_len=limit)
    result = await judge(mode, endpoint, 150, max_model_len=limit)
    assert result["error"] is None and result["reasoning"]
    reasoning_steps = [r for r in endpoint.requests if not r["final"]]
    assert reasoning_steps and all(0 < r["max_tokens"] < 250 for r in reasoning_steps)
    assert not any(r["refused"] for r in endpoint.requests)
    for r in endpoint.requests:  # each request fits with the tokens it asked for
        assert r["prompt"] + r["max_tokens"] <= limit


@pytest.mark.parametrize("mode", MODES)
async def test_without_a_known_context_the_reasoning_is_not_capped(mode: str) -> None:
    endpoint = FakeEndpoint(max_model_len=100_000)
    result = await judge(mode, endpoint, 20, max_model_len=None)
    assert result["error"] is None
    assert {r["max_tokens"] for r in endpoint.requests if not r["final"]} == {256}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strict", [False, True])
async def test_a_low_estimate_is_caught_by_the_servers_counts(mode: str, strict: bool) -> None:
    # One token per character: the client's estimate is 3x too low. A clamping server
    # returns a reasoning that fills the context (cut back before the verdict); a strict one
    # refuses step 1 (retried with less reasoning, not counted as an attempt).
    limit = await step1_prompt(mode, 150, per_char=True) + 100
    endpoint = FakeEndpoint(max_model_len=limit, per_char=True, strict=strict)
    result = await judge(mode, endpoint, 150, max_model_len=limit)
    assert result["error"] is None and result["reasoning"]
    assert any(r["refused"] for r in endpoint.requests) == strict
    assert not any(r["refused"] for r in endpoint.requests if r["final"])


@pytest.mark.parametrize("mode", MODES)
async def test_a_prompt_over_the_context_names_the_real_cause(mode: str) -> None:
    endpoint = FakeEndpoint(max_model_len=300)
    result = await judge(mode, endpoint, 400, max_model_len=300)
    assert result["error"].startswith("prompt too long for the model's context "
                                      "(max_model_len 300)")
    assert "refused even without reasoning" in result["error"]
    assert "maximum context length is 300" in result["error"]  # the server's own words
    assert [r["final"] for r in endpoint.requests] == [True]  # no reasoning paid for


def test_fit_reasoning_cuts_at_a_word_by_the_servers_counts() -> None:
    budget = ContextBudget(200, answer_tokens=2)
    reasoning = " ".join(f"w{i}" for i in range(150))
    usage = SimpleNamespace(prompt_tokens=100, completion_tokens=150)
    cut = budget.fit_reasoning(reasoning, usage)
    room = 200 - 100 - FINAL_OVERHEAD - 2
    assert reasoning.startswith(cut) and len(cut) <= math.ceil(len(reasoning) * room / 150)
    assert reasoning[len(cut)] == " "
    fits = SimpleNamespace(prompt_tokens=100, completion_tokens=room)
    assert budget.fit_reasoning(reasoning, fits) == reasoning
    full = SimpleNamespace(prompt_tokens=199, completion_tokens=1)
    assert budget.fit_reasoning(reasoning, full) == ""
    assert ContextBudget(None).fit_reasoning(reasoning, usage) == reasoning


def test_context_errors_are_told_from_other_bad_requests() -> None:
    def status(code: int, message: str) -> openai.APIStatusError:
        response = httpx2.Response(code, request=httpx2.Request("POST", "http://x/v1"))
        return openai.APIStatusError(message, response=response,
                                     body={"error": {"message": message}})

    assert is_context_error(status(400, "This model's maximum context length is 2048 tokens"))
    assert is_context_error(status(400, "'max_tokens' is too large: 256. This model's "
                                        "maximum context length is 2048 tokens"))
    assert not is_context_error(status(400, "field 'messages' must be a non-empty list"))
    assert not is_context_error(status(503, "maximum context length"))
    assert ContextBudget.after_context_error(256) == 128
    assert ContextBudget.after_context_error(16) == 0
    assert ContextBudget.after_context_error(0) is None


def _status(code: int, message: str) -> openai.APIStatusError:
    response = httpx2.Response(code, request=httpx2.Request("POST", "http://x/v1"))
    return openai.APIStatusError(message, response=response, body={"error": {"message": message}})


async def test_one_retry_policy_for_every_judging_step(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge_module, "RETRY_DELAY", 0.0)
    budget = ContextBudget(2048)
    messages = [{"role": "user", "content": "q"}]

    def scripted(*outcomes: object) -> tuple[list[int], Callable[[int], Awaitable[str]]]:
        caps: list[int] = []
        pending = list(outcomes)

        async def step(cap: int) -> str:
            caps.append(cap)
            outcome = pending.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return str(outcome)

        return caps, step

    caps, step = scripted(_status(429, "slow down"), _status(503, "busy"), "ok")
    assert await with_attempts(step, budget, 256, messages, 3) == ("ok", None)
    assert caps == [256, 256, 256]  # rate limits and 5xx are retried
    caps, step = scripted(_status(400, "field 'messages' is bad"), "never")
    assert await with_attempts(step, budget, 256, messages, 3) == (
        None, "HTTP 400: field 'messages' is bad")  # a bad request stays bad
    context = _status(400, "This model's maximum context length is 2048 tokens")
    caps, step = scripted(context, "ok")
    assert await with_attempts(step, budget, 16, messages, 1) == ("ok", None)
    assert caps == [16, 0]  # less reasoning is not a failed attempt
    caps, step = scripted(context, context, "never")
    value, error = await with_attempts(step, budget, 16, messages, 3)
    assert value is None and error is not None and "2048" in error and caps == [16, 0]
    caps, step = scripted(ValueError("no choices"), ValueError("no choices"))
    value, error = await with_attempts(step, budget, 0, messages, 2)
    assert value is None and error == "bad reply (ValueError: no choices)"
