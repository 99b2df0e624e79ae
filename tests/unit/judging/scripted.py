"""A scripted OpenAI-compatible chat endpoint (httpx2 MockTransport) for judging tests."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai

# answer(prompt, body) -> (text, [(token, {alternative: probability})] per position)
Answer = Callable[[str, dict[str, Any]], tuple[str, list[tuple[str, dict[str, float]]]]]


def prompt_of(body: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content")) for m in body["messages"])


@dataclass
class Scripted:
    answer: Answer
    reasoning: str = "A is right, B is wrong."
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        if "structured_outputs" in body or body.get("max_tokens") == 1:
            text, positions = self.answer(prompt_of(body), body)
        else:
            text, positions = self.reasoning, []
        content = [{"token": token, "logprob": math.log(dist[token]), "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": math.log(p) if p > 0 else -9999.0,
                                      "bytes": None}
                                     for t, p in dist.items()]}
                   for token, dist in positions]
        reply = {
            "id": "c1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": text},
                         "logprobs": {"content": content} if body.get("logprobs") else None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        }
        return httpx2.Response(200, json=reply)

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url="http://judge.test/v1", api_key="k", max_retries=0,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self.handler)))


def single(token: str, dist: dict[str, float] | None = None
           ) -> tuple[str, list[tuple[str, dict[str, float]]]]:
    """A one-token answer with its position's alternatives."""
    return token, [(token, dist or {token: 1.0})]
