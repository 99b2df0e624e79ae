"""The router's HTTP front door (aiohttp): OpenAI and TEI routes, auth, metrics, chat page.

Routes (all but `/health` and `/` need `Authorization: Bearer <router key>`):

- `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: routed by the body's
  `model`; streamed answers are passed through chunk by chunk.
- `POST /embed`, `/rerank` (TEI): routed by a `model` field, or to the only embedding
  model when there is one; `POST /models/<model>/embed|rerank` names the model in the path
  (a TEI client's base URL can then be `<router>/models/<model>`).
- `GET /v1/models` (and `/v1/models/<model>`): the ready models with `kind`, `engine`,
  `max_model_len`, `replicas`.
- `GET /metrics` (Prometheus), `GET /health` (open), `GET /` (the chat page; open, it asks
  for the key and keeps it in the browser's session storage).

A model nobody serves or starts gets 404 at once; one that is starting waits (the routing
core's wait). Upstream keys never leave the router: the core sets each server's key.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from importlib import resources
from typing import Any

import httpx2
from aiohttp import web

from nerschat.router.catalog import Catalog
from nerschat.router.core import RoutingCore, model_of
from nerschat.router.metrics import CONTENT_TYPE, RouterMetrics

log = logging.getLogger(__name__)

BODY_LIMIT = 64 * 1024 * 1024
OPENAI_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
TEI_OPS = ("embed", "rerank")
# Hop-by-hop or recomputed by aiohttp: never copied from an upstream answer.
DROPPED_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length",
                             "date", "server", "proxy-authenticate", "upgrade", "trailer"})
UNKNOWN_MODEL = "(not served)"
FORWARDED_HEADERS = ("Content-Type", "Accept", "Accept-Encoding", "X-Request-Id")

def error_response(status: int, message: str, kind: str) -> web.Response:
    """An OpenAI-style error body (`error.message`, `.type`, `.code`)."""
    body = {"error": {"message": f"nerschat router: {message}", "type": kind, "code": status}}
    return web.json_response(body, status=status)


class RouterApp:
    """Handlers bound to one routing core, catalog, metrics object and key."""

    def __init__(self, core: RoutingCore, catalog: Catalog, metrics: RouterMetrics, key: str):
        self.core = core
        self.catalog = catalog
        self.metrics = metrics
        self._bearer = f"Bearer {key}".encode()
        self._page = resources.files("nerschat.router").joinpath("chat.html").read_bytes()

    def build(self) -> web.Application:
        """The aiohttp application with every route bound to this router."""
        app = web.Application(client_max_size=BODY_LIMIT)
        app.router.add_get("/health", self.health)
        app.router.add_get("/", self.page)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get(r"/v1/models/{model:.+}", self.model)
        for path in OPENAI_ROUTES:
            app.router.add_post(path, self.openai)
        for op in TEI_OPS:
            app.router.add_post(f"/{op}", self.tei)
        app.router.add_post(r"/models/{model:.+}/{op:embed|rerank}", self.tei_prefixed)
        return app

    # -- open routes ------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        """`GET /health`: 200 while the router runs (no key needed)."""
        return web.Response(text="ok")

    async def page(self, request: web.Request) -> web.Response:
        """`GET /`: the chat page (no key needed; the page asks for it)."""
        return web.Response(body=self._page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})

    # -- keyed routes -----------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        given = request.headers.get("Authorization", "").encode()
        if hmac.compare_digest(given, self._bearer):
            return None
        return error_response(401, "missing or wrong API key (Authorization: Bearer <key>; "
                                   "'nerschat wait --router' says where the key is)",
                              "authentication_error")

    async def prometheus(self, request: web.Request) -> web.Response:
        """`GET /metrics`: Prometheus text format."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def models(self, request: web.Request) -> web.Response:
        """`GET /v1/models`: the ready models with kind, engine, max length and replicas."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        data = [card.to_openai() for card in self.catalog.cards()]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        """`GET /v1/models/<model>`: one ready model's card, or 404."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        wanted = request.match_info["model"]
        for card in self.catalog.cards():
            if card.id == wanted:
                return web.json_response(card.to_openai())
        return error_response(404, f"no ready model {wanted!r}", "NotFoundError")

    async def openai(self, request: web.Request) -> web.StreamResponse:
        """`POST /v1/*`: routed by the body's `model`."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.read()
        model = model_of(body)
        if model is None:
            return error_response(400, "the request body needs a JSON 'model' field naming "
                                       f"one of: {', '.join(self.catalog.names()) or 'none'}",
                                  "invalid_request_error")
        return await self._forward(request, request.path, body, model)

    async def tei(self, request: web.Request) -> web.StreamResponse:
        """`POST /embed`, `/rerank`: by a `model` field, or the only embedding model."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await request.read()
        model = model_of(body)
        if model is None:
            embedders = [c.id for c in self.catalog.cards() if c.kind == "embedding"]
            if len(embedders) != 1:
                return error_response(
                    400, f"say which model: a 'model' field or POST /models/<model>{request.path}"
                         f" (embedding models: {', '.join(embedders) or 'none'})",
                    "invalid_request_error")
            model = embedders[0]
            body = _with_model(body, model)
        return await self._forward(request, request.path, body, model)

    async def tei_prefixed(self, request: web.Request) -> web.StreamResponse:
        """`POST /models/<model>/embed|rerank`: the model named in the path."""
        refused = self._refused(request)
        if refused is not None:
            return refused
        model = request.match_info["model"]
        body = await request.read()
        if model_of(body) != model:
            body = _with_model(body, model)
        return await self._forward(request, f"/{request.match_info['op']}", body, model)

    # -- forwarding -------------------------------------------------------------------

    async def _forward(self, request: web.Request, path: str, body: bytes,
                       model: str) -> web.StreamResponse:
        started = time.perf_counter()
        if await self.catalog.availability(model) == "absent":
            # Not labelled by the asked name: clients must not grow the metrics without bound.
            self.metrics.answered(UNKNOWN_MODEL, path, 404, time.perf_counter() - started)
            served = ", ".join(self.catalog.names()) or "none"
            return error_response(404, f"no server for model {model!r} is ready or starting "
                                       f"(served: {served}; 'nerschat ls' shows the registry)",
                                  "NotFoundError")
        headers = {name: value for name in FORWARDED_HEADERS
                   if (value := request.headers.get(name)) is not None}
        try:
            upstream = await self.core.send("POST", path, body, headers)
        except httpx2.TimeoutException as exc:
            self.metrics.answered(model, path, 504, time.perf_counter() - started)
            return error_response(504, f"upstream timed out ({type(exc).__name__})",
                                  "timeout_error")
        except httpx2.HTTPError as exc:
            self.metrics.answered(model, path, 502, time.perf_counter() - started)
            return error_response(502, f"upstream failed: {exc!r}", "upstream_error")
        status = upstream.status_code
        broken = True
        try:
            reply_headers = {}
            whole = False  # a whole answer (Content-Length), not a stream
            for raw_name, raw_value in upstream.headers.raw:
                name = raw_name.decode("latin-1").lower()
                if name == "content-length":
                    whole = True
                elif name not in DROPPED_HEADERS:
                    reply_headers[name] = raw_value.decode("latin-1")
            if whole:
                try:
                    content = await upstream.aread()
                except httpx2.HTTPError as exc:
                    status = 502
                    return error_response(502, f"upstream failed mid-answer: {exc}",
                                          "upstream_error")
                broken = False
                return web.Response(status=status, body=content, headers=reply_headers)
            response = web.StreamResponse(status=status, headers=reply_headers)
            await response.prepare(request)
            try:
                async for chunk in upstream.aiter_raw():
                    await response.write(chunk)
            except httpx2.HTTPError as exc:
                # The server went away mid-answer: cut the client's connection too, so it
                # sees an incomplete answer rather than a clean end.
                log.warning("model %s: upstream failed mid-answer: %s", model, exc)
                if request.transport is not None:
                    request.transport.abort()
                return response
            await response.write_eof()
            broken = False
            return response
        finally:
            # Also on a client gone mid-stream (the handler is cancelled): closing the
            # upstream answer drops its connection, so the server stops generating.
            await upstream.aclose()
            self.metrics.answered(model, path, status, time.perf_counter() - started, broken)


def _with_model(body: bytes, model: str) -> bytes:
    """The JSON object `body` with `model` set (a non-object body is left to the server)."""
    try:
        data: Any = json.loads(body) if body else {}
    except ValueError:
        return body
    if not isinstance(data, dict):
        return body
    data["model"] = model
    return json.dumps(data).encode()
