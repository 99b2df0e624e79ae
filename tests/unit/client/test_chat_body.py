"""`create_chat`: the body goes out as given, the reply reads like the SDK's."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from nerschat.client.chat import create_chat

REPLY = {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
         "choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "B"}}],
         "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}


def client(handler: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://judge.test/v1", api_key="k", max_retries=0,
                              http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(handler)))


async def test_the_body_is_sent_as_given_and_the_reply_parsed() -> None:
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, json=REPLY)

    body = {"model": "m", "messages": [{"role": "user", "content": "é 🙂"}], "max_tokens": 2,
            "continue_final_message": True, "structured_outputs": {"choice": ["A", "B"]}}
    reply = await create_chat(client(handler), body, headers={"X-Trace": "1"})
    assert reply.choices[0].message.content == "B" and reply.usage is not None
    assert reply.usage.prompt_tokens == 7
    (request,) = seen
    assert request.url.path == "/v1/chat/completions"
    assert json.loads(request.content) == body
    assert request.headers["Authorization"] == "Bearer k"
    assert request.headers["X-Trace"] == "1"


async def test_an_error_status_raises_like_the_sdk() -> None:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(400, json={"error": {"message": "too long", "code": 400}})

    with pytest.raises(openai.BadRequestError, match="too long"):
        await create_chat(client(handler), {"model": "m", "messages": []})
