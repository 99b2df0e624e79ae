"""A stand-in server speaking the part of the vLLM and TEI HTTP APIs that nerschat uses.

It exists for fault injection and for measuring orchestration overhead against a server of
known capacity: outputs are deterministic, latency is a sleep (no CPU burnt), capacity is a
semaphore like vLLM's `--max-num-seqs`, and faults are knobs (die after N requests, answer
5xx every K-th request, hang after N). It is never a stand-in for a real model in demos.

Run: `python -m nerschat.testing.stub_server --port 8000 --model m1 --kind llm`
(the API key comes from `VLLM_API_KEY` in the environment, as for vLLM).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

TEI_BODY_LIMIT = 2 * 1024 * 1024  # TEI answers 413 beyond this


@dataclass
class StubSettings:
    """Fault knobs and advertised limits of one stub server (times in seconds, lengths in words)."""

    model: str
    kind: str = "llm"
    api_key: str | None = None
    latency: float = 0.0
    capacity: int = 256
    fail_after: int | None = None
    error_every: int | None = None
    error_status: int = 503
    hang_after: int | None = None
    hang: bool = False
    slow_factor: float = 1.0
    chunk_delay: float = 0.0
    api: str = "openai"  # "tei": also answer TEI's /info (its /embed is always there)
    dim: int = 384
    max_model_len: int = 2048
    max_client_batch_size: int = 32
    max_input_length: int = 512
    max_batch_tokens: int = 16384
    capacity_unit: str = "requests"  # "texts": an embedding request holds one slot per text
    check_context: bool = False  # refuse chat prompts over max_model_len words, like vLLM
    strict_context: bool = False  # also refuse prompt + max_tokens over it (older vLLM)


@dataclass
class StubState:
    """Counters of one stub server, as its /metrics reports them (tokens are words)."""

    settings: StubSettings
    semaphore: asyncio.Semaphore
    received: int = 0
    served: int = 0
    running: int = 0
    waiting: int = 0
    streaming: int = 0  # answers still being streamed (running, as vLLM counts them)
    prompt_tokens: int = 0  # words read, as vLLM's vllm:prompt_tokens_total
    generation_tokens: int = 0  # words answered (streamed ones as they are sent)
    started_at: float = field(default_factory=time.time)


def _words(text: str) -> list[str]:
    return text.split()


def _seed(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def embed_text(text: str, dim: int) -> np.ndarray:
    """A deterministic unit vector for a text (same text, same vector, on every replica)."""
    vector = np.random.default_rng(_seed(text)).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def _error(status: int, message: str, kind: str = "BadRequestError") -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return web.json_response(body, status=status)


class StubServer:
    """The aiohttp handlers of one stub server; `app()` wires them to the vLLM and TEI routes."""

    def __init__(self, settings: StubSettings):
        self.settings = settings
        self.state = StubState(settings, asyncio.Semaphore(settings.capacity))
        self._slot_lock = asyncio.Lock()

    # -- plumbing ---------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application with every route the stub answers.

        Request bodies are limited to 2 MiB (TEI_BODY_LIMIT, in bytes), as TEI does.
        """
        app = web.Application(client_max_size=TEI_BODY_LIMIT)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/embed", self.tei_embed)
        app.router.add_get("/info", self.tei_info)
        app.router.add_post("/rerank", self.tei_rerank)
        app.router.add_get("/admin/faults", self.get_faults)
        app.router.add_post("/admin/faults", self.set_faults)
        return app

    def _authorized(self, request: web.Request) -> bool:
        key = self.settings.api_key
        return not key or request.headers.get("Authorization") == f"Bearer {key}"

    async def _admit(self, request: web.Request) -> web.Response | None:
        """Auth, fault knobs and the capacity queue; returns an error response or None."""
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        state, settings = self.state, self.settings
        state.received += 1
        if settings.fail_after is not None and state.received > settings.fail_after:
            os._exit(3)  # die abruptly: in-flight connections are reset
        if settings.hang or (settings.hang_after is not None
                             and state.received > settings.hang_after):
            state.running += 1  # like a stuck engine: counted as running, never progressing
            await asyncio.Event().wait()
        if settings.error_every and state.received % settings.error_every == 0:
            return _error(settings.error_status, "injected fault", "ServiceUnavailableError")
        return None

    async def _work(self, texts: int = 1) -> None:
        """Hold one of `capacity` slots for `latency` seconds, like one running sequence.

        With capacity_unit="texts" it holds `texts` slots (at most the whole capacity).
        """
        state = self.state
        slots = 1
        if self.settings.capacity_unit == "texts":
            slots = max(1, min(texts, self.settings.capacity))
        state.waiting += 1
        if slots > 1:
            async with self._slot_lock:  # take all slots at once, never part of them
                for _ in range(slots - 1):
                    await state.semaphore.acquire()
        try:
            async with state.semaphore:
                state.waiting -= 1
                state.running += 1
                try:
                    if self.settings.latency > 0:
                        await asyncio.sleep(self.settings.latency * self.settings.slow_factor)
                finally:
                    state.running -= 1
        finally:
            for _ in range(slots - 1):
                state.semaphore.release()
        state.served += 1

    async def _json(self, request: web.Request) -> dict[str, Any] | web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != self.settings.model and request.path.startswith("/v1"):
            return _error(404, f"The model `{model}` does not exist.", "NotFoundError")
        return body

    async def _begin(self, request: web.Request, kind: str,
                     refusal: str) -> dict[str, Any] | web.Response:
        """Auth, fault knobs, JSON body and the served kind: the body, or the response to send."""
        refused = await self._admit(request)
        if refused is not None:
            return refused
        body = await self._json(request)
        if not isinstance(body, web.Response) and self.settings.kind != kind:
            return _error(400, refusal)
        return body

    # -- runtime fault switches (tests and benchmarks) ----------------------------------

    FAULTS = ("error_every", "error_status", "hang", "hang_after", "slow_factor", "latency",
              "chunk_delay", "fail_after", "check_context", "strict_context")

    async def get_faults(self, request: web.Request) -> web.Response:
        """`GET /admin/faults`: the current fault knobs."""
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        return web.json_response({name: getattr(self.settings, name) for name in self.FAULTS})

    async def set_faults(self, request: web.Request) -> web.Response:
        """`POST /admin/faults`: switch faults on or off while running.

        Body: `{"error_every": 1, "error_status": 500, "slow_factor": 10, "hang": true, ...}`
        (keys among FAULTS; null clears a count). 400 for other keys or a body that is not JSON.
        """
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "request body is not valid JSON")
        if not isinstance(body, dict) or not set(body) <= set(self.FAULTS):
            return _error(400, f"expected an object with keys among {', '.join(self.FAULTS)}")
        for name, value in body.items():
            setattr(self.settings, name, value)
        return await self.get_faults(request)

    # -- generic endpoints ------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """`GET /health`: always 200 once listening (like vLLM after its model loads)."""
        return web.Response(status=200)

    async def metrics(self, request: web.Request) -> web.Response:
        """`GET /metrics`: Prometheus text with vLLM's running/waiting/token counters.

        With `api` "tei" also TEI's `te_queue_size` and `te_request_success`.
        """
        s = self.state
        labels = f'{{model_name="{self.settings.model}"}}'
        text = (
            f"vllm:num_requests_running{labels} {s.running + s.streaming}\n"
            f"vllm:num_requests_waiting{labels} {s.waiting}\n"
            f"vllm:prompt_tokens_total{labels} {s.prompt_tokens}\n"
            f"vllm:generation_tokens_total{labels} {s.generation_tokens}\n"
            f"nerschat_stub_requests_received_total {s.received}\n"
            f"nerschat_stub_requests_served_total {s.served}\n"
        )
        if self.settings.api == "tei":  # TEI's names too: its queue and finished requests
            text += (f"te_queue_size {s.waiting}\n"
                     f'te_request_success{{method="batch"}} {s.served}\n')
        return web.Response(text=text)

    async def models(self, request: web.Request) -> web.Response:
        """`GET /v1/models`: one model card; 401 on a bad key.

        The card carries `max_model_len` (tokens; the stub counts words as tokens).
        """
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        card = {
            "id": self.settings.model,
            "object": "model",
            "created": int(self.state.started_at),
            "owned_by": "nerschat-stub",
            "root": self.settings.model,
            "max_model_len": self.settings.max_model_len,
        }
        return web.json_response({"object": "list", "data": [card]})

    # -- generation ---------------------------------------------------------------------

    def _generate(self, prompt: str, body: dict[str, Any], index: int) -> tuple[str, str]:
        """Deterministic text for a prompt; returns (text, finish_reason)."""
        structured = body.get("structured_outputs") or {}
        choices = structured.get("choice") if isinstance(structured, dict) else None
        if choices:
            return str(choices[_seed(prompt) % len(choices)]), "stop"
        words = [f"stub-{self.settings.model}", "answer", f"{index}:"] + _words(prompt)[-12:]
        limit = body.get("max_tokens") or body.get("max_completion_tokens") or 64
        finish = "length" if len(words) > int(limit) else "stop"
        return " ".join(words[: int(limit)]), finish

    def _logprobs(self, text: str, body: dict[str, Any]) -> dict[str, Any] | None:
        if not body.get("logprobs"):
            return None
        top_n = int(body.get("top_logprobs") or 0)
        structured = body.get("structured_outputs") or {}
        alternatives = list(structured.get("choice") or []) if isinstance(structured, dict) else []
        alternatives = alternatives or [text]
        top = [
            {"token": alt, "logprob": -0.1 * (rank + (0 if alt == text else 1)), "bytes": None}
            for rank, alt in enumerate(alternatives[:top_n])
        ]
        return {"content": [{"token": text, "logprob": -0.1, "bytes": None, "top_logprobs": top}]}

    @staticmethod
    def _prompt_of(messages: list[dict[str, Any]]) -> str:
        parts = []
        for message in messages:
            content = message.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(str(content or ""))
        return "\n".join(parts)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/chat/completions`: a deterministic answer, streamed or not.

        400 for bad `messages`, a served kind other than "llm", (with `check_context`) a
        prompt over `max_model_len` words, or (with `strict_context`) a prompt plus
        `max_tokens` over it.
        """
        body = await self._begin(request, "llm", "The model does not support Chat Completions API")
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "field 'messages' must be a non-empty list")
        prompt = self._prompt_of(messages)
        if body.get("continue_final_message") and messages[-1].get("role") != "assistant":
            return _error(400, "continue_final_message requires a final assistant message")
        if self.settings.check_context and len(_words(prompt)) > self.settings.max_model_len:
            return _error(400, f"This model's maximum context length is "
                               f"{self.settings.max_model_len} tokens. However, your prompt "
                               f"contains at least {self.settings.max_model_len + 1} input tokens")
        wanted = body.get("max_tokens") or body.get("max_completion_tokens") or 0
        if self.settings.strict_context and isinstance(wanted, int) and \
                len(_words(prompt)) + wanted > self.settings.max_model_len:
            words = len(_words(prompt))
            return _error(400, f"This model's maximum context length is "
                               f"{self.settings.max_model_len} tokens. However, you requested "
                               f"{words + wanted} tokens ({words} in the messages, {wanted} in "
                               f"the completion). Please reduce the length of the messages or "
                               f"completion.")
        await self._work()
        n = int(body.get("n") or 1)
        outputs = [self._generate(prompt, body, i) for i in range(n)]
        prompt_tokens = len(_words(prompt))
        completion_tokens = sum(len(_words(text)) for text, _ in outputs)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        self.state.prompt_tokens += prompt_tokens
        if body.get("stream"):
            return await self._stream_chat(request, ident, outputs, body, usage)
        self.state.generation_tokens += completion_tokens
        result = {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.settings.model,
            "choices": [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": self._logprobs(text, body),
                    "finish_reason": finish,
                }
                for i, (text, finish) in enumerate(outputs)
            ],
            "usage": usage,
        }
        return web.json_response(result)

    async def _stream_chat(
        self,
        request: web.Request,
        ident: str,
        outputs: list[tuple[str, str]],
        body: dict[str, Any],
        usage: dict[str, int],
    ) -> web.StreamResponse:
        self.state.streaming += 1
        try:
            return await self._stream_chunks(request, ident, outputs, body, usage)
        finally:
            self.state.streaming -= 1

    async def _stream_chunks(
        self,
        request: web.Request,
        ident: str,
        outputs: list[tuple[str, str]],
        body: dict[str, Any],
        usage: dict[str, int],
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        created = int(time.time())

        async def send(choices: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> None:
            chunk = {"id": ident, "object": "chat.completion.chunk", "created": created,
                     "model": self.settings.model, "choices": choices, **(extra or {})}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        for i, (text, finish) in enumerate(outputs):
            await send([{"index": i, "delta": {"role": "assistant", "content": ""}}])
            for j, word in enumerate(_words(text)):
                await send([{"index": i, "delta": {"content": word if j == 0 else " " + word}}])
                self.state.generation_tokens += 1
                if self.settings.chunk_delay:
                    await asyncio.sleep(self.settings.chunk_delay)
            await send([{"index": i, "delta": {}, "finish_reason": finish}])
        if (body.get("stream_options") or {}).get("include_usage"):
            await send([], {"usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def completions(self, request: web.Request) -> web.Response:
        """`POST /v1/completions`: a deterministic completion of each prompt; 400 on a bad body."""
        body = await self._begin(request, "llm", "The model does not support Completions API")
        if isinstance(body, web.Response):
            return body
        prompt = body.get("prompt")
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return _error(400, "field 'prompt' must be a string or a list of strings")
        await self._work()
        choices, completion_tokens = [], 0
        for i, text_in in enumerate(prompts):
            text, finish = self._generate(text_in, body, i)
            completion_tokens += len(_words(text))
            choices.append({"index": i, "text": text, "logprobs": None, "finish_reason": finish})
        prompt_tokens: int = sum(len(_words(str(p))) for p in prompts)
        self.state.prompt_tokens += prompt_tokens
        self.state.generation_tokens += completion_tokens
        return web.json_response({
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.settings.model,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        })

    # -- embeddings -------------------------------------------------------------------

    async def embeddings(self, request: web.Request) -> web.Response:
        """`POST /v1/embeddings`: deterministic unit vectors of `dim` floats; 400 on a bad body."""
        body = await self._begin(request, "embedding", "The model does not support Embeddings API")
        if isinstance(body, web.Response):
            return body
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return _error(400, "field 'input' must be a string or a non-empty list of strings")
        limit = body.get("truncate_prompt_tokens")
        if limit is not None:  # like vLLM: keep the last `limit` tokens
            texts = [" ".join(_words(t)[-int(limit):]) for t in texts]
        for text in texts:
            if len(_words(text)) > self.settings.max_model_len:
                return _error(400, f"This model's maximum context length is "
                                   f"{self.settings.max_model_len} tokens; the input has "
                                   f"{len(_words(text))}")
        await self._work(len(texts))
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = embed_text(text, self.settings.dim)
            encoded: Any = (base64.b64encode(vector.tobytes()).decode() if as_base64
                            else vector.tolist())
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        tokens = sum(len(_words(t)) for t in texts)
        self.state.prompt_tokens += tokens
        return web.json_response({
            "object": "list", "model": self.settings.model, "data": data,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def tei_embed(self, request: web.Request) -> web.Response:
        """`POST /embed` (TEI): a list of deterministic unit vectors of `dim` floats.

        422 for bad `inputs` or more than `max_client_batch_size` of them; 413 for a text over
        `max_input_length` words unless `truncate` is set.
        """
        body = await self._begin(request, "embedding", "not an embedding model")
        if isinstance(body, web.Response):
            return body
        raw = body.get("inputs")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return web.json_response({"error": "inputs must be a string or a list of strings",
                                      "error_type": "Validation"}, status=422)
        if len(texts) > self.settings.max_client_batch_size:
            message = (f"batch size {len(texts)} > maximum allowed batch size "
                       f"{self.settings.max_client_batch_size}")
            return web.json_response({"error": message, "error_type": "Validation"}, status=422)
        prefix = f"{body['prompt_name']}: " if body.get("prompt_name") else ""
        vectors = []
        for text in texts:
            text = prefix + text
            words = _words(text)
            if len(words) > self.settings.max_input_length:
                if not body.get("truncate"):
                    message = (f"Input validation error: inputs must have less than "
                               f"{self.settings.max_input_length} tokens. Given: {len(words)}")
                    return web.json_response({"error": message, "error_type": "Validation"},
                                             status=413)
                text = " ".join(words[: self.settings.max_input_length])
            vector = embed_text(text, self.settings.dim)
            if body.get("normalize") is False:
                vector = vector * 2.0
            vectors.append(vector.tolist())
        await self._work(len(texts))
        self.state.prompt_tokens += sum(len(_words(t)) for t in texts)
        return web.json_response(vectors)

    async def tei_rerank(self, request: web.Request) -> web.Response:
        """TEI's /rerank: `query` and `texts` in, `[{index, score}]` out, best first."""
        body = await self._begin(request, "embedding", "not an embedding model")
        if isinstance(body, web.Response):
            return body
        query, texts = body.get("query"), body.get("texts")
        if not isinstance(query, str) or not isinstance(texts, list) or not texts:
            return web.json_response({"error": "query must be a string, texts a non-empty list",
                                      "error_type": "Validation"}, status=422)
        anchor = embed_text(query, self.settings.dim)
        scores = [float(anchor @ embed_text(str(t), self.settings.dim)) for t in texts]
        await self._work()
        ranked = sorted(range(len(texts)), key=lambda i: -scores[i])
        return web.json_response([{"index": i, "score": scores[i]} for i in ranked])

    async def tei_info(self, request: web.Request) -> web.Response:
        """`GET /info` (TEI): model and limits; 404 unless `api` is "tei", 401 on a bad key."""
        if self.settings.api != "tei":
            return web.json_response({"detail": "Not Found"}, status=404)
        if not self._authorized(request):
            return web.json_response({"error": "Unauthorized"}, status=401)
        s = self.settings
        return web.json_response({
            "model_id": s.model,
            "model_type": {"embedding": {"pooling": "mean"}},
            "max_concurrent_requests": s.capacity,
            "max_input_length": s.max_input_length,
            "max_batch_tokens": s.max_batch_tokens,
            "max_client_batch_size": s.max_client_batch_size,
            "version": "stub",
        })


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The stub's command line (see `--help`); argparse exits 2 on bad arguments."""
    parser = argparse.ArgumentParser(prog="nerschat-stub", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--kind", choices=("llm", "embedding"), default="llm")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--capacity", type=int, default=256, help="requests served at once")
    parser.add_argument("--startup-delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--fail-after", type=int, help="exit abruptly on request N+1")
    parser.add_argument("--error-every", type=int, help="answer every K-th request with an error")
    parser.add_argument("--error-status", type=int, default=503)
    parser.add_argument("--hang-after", type=int, help="never answer requests after the N-th")
    parser.add_argument("--slow-factor", type=float, default=1.0,
                        help="multiply the latency (a degraded replica)")
    parser.add_argument("--chunk-delay", type=float, default=0.0,
                        help="seconds between streamed chunks")
    parser.add_argument("--api", choices=("openai", "tei"), default="openai",
                        help="'tei' also answers /info, so clients treat it as TEI")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimension")
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--max-client-batch-size", type=int, default=32)
    parser.add_argument("--max-input-length", type=int, default=512)
    parser.add_argument("--tokens-per-second", type=float, help="accepted for compatibility")
    parser.add_argument("--capacity-unit", choices=("requests", "texts"), default="requests",
                        help="'texts': an embedding request holds one capacity slot per text")
    parser.add_argument("--check-context", type=int, default=0,
                        help="1: refuse chat prompts longer than --max-model-len words")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run one stub server until it is stopped (or a `--fail-after` fault kills it)."""
    args = parse_args(argv)
    if args.startup_delay > 0:
        time.sleep(args.startup_delay)  # like a model load: the port is closed meanwhile
    settings = StubSettings(
        model=args.model, kind=args.kind, api_key=os.environ.get("VLLM_API_KEY") or None,
        latency=args.latency, capacity=args.capacity, fail_after=args.fail_after,
        error_every=args.error_every, error_status=args.error_status, hang_after=args.hang_after,
        slow_factor=args.slow_factor,
        chunk_delay=args.chunk_delay, api=args.api,
        dim=args.dim, max_model_len=args.max_model_len,
        max_client_batch_size=args.max_client_batch_size, max_input_length=args.max_input_length,
        capacity_unit=args.capacity_unit, check_context=bool(args.check_context),
    )

    async def build() -> web.Application:
        return StubServer(settings).app()

    web.run_app(build(), host=args.host, port=args.port, access_log=None, print=None,
                shutdown_timeout=2.0)


if __name__ == "__main__":
    main()
