"""OpenAI batch files (`custom_id`, `method`, `url`, `body`) run like `vllm run-batch`.

Each request is sent as is to an endpoint serving its `body.model`, and answered with the
same output line `vllm run-batch` writes: `id`, `custom_id`, `response{status_code,
request_id, body}`, `error`. Unlike `vllm run-batch`, results are appended as they finish
(resumable) and requests are spread over every ready endpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from dataclasses import dataclass
from typing import Any

import httpx2

from nerschat.client.routing import shape_problem
from nerschat.workflows.inputs import FieldError, require_str

BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


@dataclass(frozen=True)
class BatchRequest:
    """One line of an OpenAI batch file: a POST of `body` to `url` (one of BATCH_URLS)."""

    custom_id: str
    method: str
    url: str
    body: dict[str, Any]


def parse_batch_request(record: dict[str, Any]) -> BatchRequest:
    """A BatchRequest from one batch-file record; raises FieldError for a missing or bad field.

    Refused: a method other than POST, a url not in BATCH_URLS, a body that is not an object
    or names no model, and streaming requests.
    """
    custom_id = require_str(record, "custom_id")
    method = require_str(record, "method")
    if method.upper() != "POST":
        raise FieldError("method", f"{method!r} is not supported; only POST")
    url = require_str(record, "url")
    if url not in BATCH_URLS:
        raise FieldError("url", f"{url!r} is not one of {', '.join(BATCH_URLS)}")
    body = record.get("body")
    if not isinstance(body, dict):
        raise FieldError("body", "missing" if body is None else "must be a JSON object")
    if "model" not in body:
        raise FieldError("body.model", "missing")
    model = body["model"]
    if not isinstance(model, str):
        raise FieldError("body.model", f"must be a string, got {type(model).__name__} "
                                       f"{json.dumps(model)[:40]}")
    if not model.strip():
        raise FieldError("body.model", "is empty")
    if body.get("stream"):
        raise FieldError("body.stream", "streaming is not supported in batch files")
    return BatchRequest(custom_id, method.upper(), url, body)


ATTEMPTS = 3
RETRY_DELAY = 0.5  # seconds before the second attempt; doubled after each
TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})


async def run_batch_request(http: httpx2.AsyncClient, request: BatchRequest,
                            attempts: int = ATTEMPTS) -> dict[str, Any]:
    """One output line; transport failures become `error` (and are retried on a rerun).

    HTTP 429 (rate limited), 5xx and connection errors are retried up to `attempts` times
    with a back-off; the last answer is recorded.
    """
    output: dict[str, Any] = {"id": f"vllm-{uuid.uuid4().hex}", "custom_id": request.custom_id,
                              "response": None, "error": None}
    for attempt in range(1, attempts + 1):
        try:
            response = await http.post(request.url, json=request.body)
        except httpx2.HTTPError as exc:
            output["error"] = f"{type(exc).__name__}: {exc}"
            if attempt == attempts:
                return output
        else:
            if response.status_code not in TRANSIENT or attempt == attempts:
                break
        await asyncio.sleep(RETRY_DELAY * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
    output["error"] = None
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    output["response"] = {"status_code": response.status_code,
                          "request_id": f"vllm-batch-{uuid.uuid4().hex}", "body": body}
    if response.status_code >= 400:
        error = body.get("error", body) if isinstance(body, dict) else body
        output["error"] = (str(error.get("message", error)) if isinstance(error, dict)
                           else str(error)[:500]) or f"HTTP {response.status_code}"
    elif response.status_code == 200:  # a success must be the API's reply
        problem = (shape_problem(request.url, body, json.dumps(request.body).encode())
                   if isinstance(body, (dict, list)) else "reply is not JSON")
        if problem is not None:
            output["error"] = f"malformed reply: {problem}"
    return output
