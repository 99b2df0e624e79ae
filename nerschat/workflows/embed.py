"""Embedding a corpus: batched to the server's limits, sharded, resumable.

    OUTDIR/shard-00000.npy       float32 [n, dim], rows in input order
    OUTDIR/shard-00000.ids.npy   the n ids (numpy unicode array)
    OUTDIR/manifest.json         model, dimension, count, normalisation, prefix, shards + sha256
    OUTDIR/.work/                plan, shard inputs, per-batch progress

A shard is finished when its two .npy files exist (each written to a temporary name and
renamed); a rerun skips finished shards and recomputes only the others. The manifest is
written last, atomically.

Batching follows the engine: TEI's `/info` (`max_client_batch_size`, `max_batch_tokens`,
`max_input_length`) through `/embed` (which also takes `prompt_name`), vLLM's
`max_model_len` through `/v1/embeddings` with base64 vectors. Bodies stay under TEI's 2 MB.
Over-long texts are truncated (or recorded as errors with `truncate=False`) and counted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import numpy as np

from nerschat.client.connect import make_pool, routed_http_client
from nerschat.client.pool import EndpointPool
from nerschat.errors import FailureError

BODY_LIMIT = 1_800_000  # bytes of text per request, under TEI's 2 MB body limit
CHARS_PER_TOKEN = 3  # conservative estimate for token budgets
MAX_BATCHES_IN_FLIGHT = 64


class EmbedError(FailureError, RuntimeError):
    """A batch that cannot be embedded (after fail-over), or a bad option for the engine."""


@dataclass
class EmbedOptions:
    model: str | None = None
    prompt_name: str | None = None
    prefix: str = ""
    truncate: bool = True
    batch_size: int | None = None
    in_flight: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_name and self.prefix:
            raise ValueError("give either a prompt name or a prefix, not both")


@dataclass
class ServerLimits:
    """How much one request may carry, from the engine's own description."""

    api: str  # "tei" (/embed) or "openai" (/v1/embeddings)
    batch_size: int
    max_input_tokens: int | None
    max_batch_tokens: int | None

    @classmethod
    async def probe(cls, http: httpx2.AsyncClient, pool: EndpointPool) -> ServerLimits:
        pool.refresh(force=True)
        loads = pool.loads()
        if not loads:
            raise EmbedError("no ready embedding endpoint")
        endpoint = loads[0].endpoint
        # TEI describes its limits at /info; vLLM has no such route (404).
        info = await http.get("/info")
        if info.status_code == 200 and "max_client_batch_size" in info.text:
            data = info.json()
            return cls("tei", int(data.get("max_client_batch_size", 32)),
                       data.get("max_input_length"), data.get("max_batch_tokens"))
        return cls("openai", 64, endpoint.max_model_len, None)


def plan_batches(texts: list[str], limits: ServerLimits, batch_size: int | None) -> list[range]:
    """Consecutive index ranges that respect count, estimated tokens and body size."""
    cap = min(batch_size or limits.batch_size, limits.batch_size)
    batches, start, size, tokens = [], 0, 0, 0
    for i, text in enumerate(texts):
        length = len(text.encode("utf-8"))
        estimate = len(text) // CHARS_PER_TOKEN + 1
        if limits.max_input_tokens:
            estimate = min(estimate, limits.max_input_tokens)
        full = (i - start >= cap or size + length > BODY_LIMIT
                or (limits.max_batch_tokens is not None and tokens + estimate > limits.max_batch_tokens))
        if i > start and full:
            batches.append(range(start, i))
            start, size, tokens = i, 0, 0
        size += length
        tokens += estimate
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


def _too_long(response: httpx2.Response) -> bool:
    if response.status_code == 413:
        return True
    text = response.text.lower()
    return response.status_code in (400, 422) and any(
        s in text for s in ("too long", "maximum context length", "max_model_len", "less than",
                            "exceeds"))


@dataclass
class BatchOutcome:
    vectors: np.ndarray
    tokens: int
    truncated: int
    errors: dict[int, str] = field(default_factory=dict)  # index in batch -> error


class Embedder:
    """Sends batches to the right API of the engine behind the pool."""

    def __init__(self, http: httpx2.AsyncClient, limits: ServerLimits, options: EmbedOptions,
                 model: str):
        self.http = http
        self.limits = limits
        self.options = options
        self.model = model
        if options.prompt_name and limits.api != "tei":
            raise EmbedError("prompt names need TEI's /embed; this engine has none: use --prefix")

    async def _request(self, texts: list[str], truncate: bool) -> httpx2.Response:
        if self.limits.api == "tei":
            body: dict[str, Any] = {"inputs": texts, "truncate": truncate}
            if self.options.prompt_name:
                body["prompt_name"] = self.options.prompt_name
            return await self.http.post("/embed", json=body)
        body = {"model": self.model, "input": texts, "encoding_format": "base64"}
        if truncate and self.limits.max_input_tokens:
            body["truncate_prompt_tokens"] = self.limits.max_input_tokens
        return await self.http.post("/v1/embeddings", json=body)

    def _decode(self, response: httpx2.Response) -> tuple[np.ndarray, int]:
        payload = response.json()
        if self.limits.api == "tei":
            return np.asarray(payload, dtype=np.float32), 0
        rows = sorted(payload["data"], key=lambda d: d["index"])
        vectors = np.stack([np.frombuffer(base64.b64decode(r["embedding"]), dtype=np.float32)
                            for r in rows])
        return vectors, int((payload.get("usage") or {}).get("prompt_tokens") or 0)

    def _fail(self, response: httpx2.Response) -> EmbedError:
        return EmbedError(f"HTTP {response.status_code}: {response.text[:300]}")

    async def embed(self, texts: list[str]) -> BatchOutcome:
        texts = [self.options.prefix + t for t in texts] if self.options.prefix else texts
        response = await self._request(texts, truncate=False)
        if response.status_code == 200:
            vectors, tokens = self._decode(response)
            return BatchOutcome(vectors, tokens, 0)
        if not _too_long(response):
            raise self._fail(response)
        # Some text is over the limit: find which, one by one, and truncate (or reject) those.
        rows: list[np.ndarray | None] = []
        tokens = truncated = 0
        errors: dict[int, str] = {}
        for i, text in enumerate(texts):
            single = await self._request([text], truncate=False)
            if single.status_code != 200 and _too_long(single):
                if not self.options.truncate:
                    errors[i] = "text longer than the model's input limit"
                    rows.append(None)
                    continue
                single = await self._request([text], truncate=True)
                truncated += 1
            if single.status_code != 200:
                raise self._fail(single)
            vector, used = self._decode(single)
            rows.append(vector[0])
            tokens += used
        dim = next((r.shape[0] for r in rows if r is not None), 0)
        matrix = np.stack([r if r is not None else np.full(dim, np.nan, np.float32)
                           for r in rows]) if dim else np.zeros((len(rows), 0), np.float32)
        return BatchOutcome(matrix, tokens, truncated, errors)


def _save_atomic(path: Path, array: np.ndarray) -> str:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_files(outdir: Path, shard: int) -> tuple[Path, Path, Path]:
    stem = f"shard-{shard:05d}"
    return outdir / f"{stem}.npy", outdir / f"{stem}.ids.npy", outdir / f"{stem}.json"


async def embed_shard_async(input_path: Path, outdir: Path, shard: int, *, registry: str | None,
                            options: EmbedOptions, timeout: float = 600.0,
                            progress_path: Path | None = None) -> dict[str, Any]:
    """Embed one shard's texts and write its files; returns its summary."""
    vectors_path, ids_path, meta_path = shard_files(outdir, shard)
    if meta_path.exists():
        return json.loads(meta_path.read_text())
    with open(input_path, encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle if line.strip()]
    ids = [d["id"] for d in docs]
    texts = [d["text"] for d in docs]
    pool = await asyncio.to_thread(make_pool, options.model, "embedding" if options.model is None
                                   else None, registry, timeout=timeout, wait=True,
                                   on_status=None, refresh_interval=2.0)
    http = routed_http_client(pool, timeout=timeout)
    started = time.monotonic()
    try:
        limits = await ServerLimits.probe(http, pool)
        model = options.model or pool.loads()[0].endpoint.model
        embedder = Embedder(http, limits, options, model)
        batches = plan_batches(texts, limits, options.batch_size)
        endpoints = max(1, len(pool.loads()))
        per_endpoint = max(4, (pool.loads()[0].endpoint.capacity or 0) // max(1, len(batches[0])))
        width = options.in_flight or min(MAX_BATCHES_IN_FLIGHT, endpoints * per_endpoint)
        outcomes: dict[int, BatchOutcome] = {}
        queue = iter(enumerate(batches))
        progress = open(progress_path, "a", encoding="utf-8") if progress_path else None  # noqa: SIM115

        async def worker() -> None:
            for number, batch in queue:
                outcome = await embedder.embed([texts[i] for i in batch])
                outcomes[number] = outcome
                if progress is not None:
                    progress.write(json.dumps({"n": len(batch), "tokens": outcome.tokens,
                                               "errors": len(outcome.errors)}) + "\n")
                    progress.flush()

        try:
            await asyncio.gather(*(worker() for _ in range(min(width, len(batches)))))
        finally:
            if progress is not None:
                progress.close()
    finally:
        await http.aclose()
    ordered = [outcomes[n] for n in range(len(batches))]
    matrix = np.concatenate([o.vectors for o in ordered]).astype(np.float32, copy=False)
    errors = {ids[batch.start + i]: message for batch, o in zip(batches, ordered)
              for i, message in o.errors.items()}
    norms = np.linalg.norm(matrix[~np.isnan(matrix).any(axis=1)], axis=1) if len(matrix) else []
    summary = {
        "shard": shard, "count": len(ids), "dimension": int(matrix.shape[1]),
        "vectors": vectors_path.name, "ids": ids_path.name,
        "sha256": _save_atomic(vectors_path, matrix),
        "ids_sha256": _save_atomic(ids_path, np.array(ids, dtype=str)),
        "tokens": sum(o.tokens for o in ordered),
        "truncated": sum(o.truncated for o in ordered),
        "errors": errors, "model": model, "batches": len(batches), "batches_in_flight": width,
        "normalized": bool(len(norms) and np.allclose(norms, 1.0, atol=1e-3)),
        "seconds": round(time.monotonic() - started, 3),
    }
    tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, meta_path)  # the shard counts as finished from here on
    return summary


def embed_shard(input_path: str, outdir: str, shard: int, registry: str | None,
                options: dict[str, Any], timeout: float = 600.0,
                progress_path: str | None = None) -> dict[str, Any]:
    """Synchronous entry point: the body of the Parsl client app."""
    return asyncio.run(embed_shard_async(
        Path(input_path), Path(outdir), shard, registry=registry, options=EmbedOptions(**options),
        timeout=timeout, progress_path=Path(progress_path) if progress_path else None))


@dataclass
class EmbeddingSet:
    ids: list[str]
    vectors: np.ndarray
    manifest: dict[str, Any]


def load_embeddings(outdir: str | os.PathLike[str], mmap: bool | None = None) -> EmbeddingSet:
    """Ids and a float32 matrix of a finished `nerschat embed` run.

    One shard is memory-mapped directly. Several shards are concatenated in memory, or, with
    `mmap=True` (default above 1 GiB), into `all.npy` once and memory-mapped from there.
    """
    outdir = Path(outdir)
    manifest_path = outdir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: the run has not finished")
    manifest = json.loads(manifest_path.read_text())
    shards = manifest["shards"]
    ids = [str(i) for s in shards for i in np.load(outdir / s["ids"])]
    total_bytes = manifest["count"] * manifest["dimension"] * 4
    if mmap is None:
        mmap = total_bytes > (1 << 30)
    if len(shards) == 1:
        vectors = np.load(outdir / shards[0]["vectors"], mmap_mode="r" if mmap else None)
    elif not mmap:
        vectors = np.concatenate([np.load(outdir / s["vectors"]) for s in shards])
    else:
        combined = outdir / "all.npy"
        if not combined.exists():
            tmp = outdir / ".all.npy.tmp"
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32,
                                            shape=(manifest["count"], manifest["dimension"]))
            row = 0
            for s in shards:
                part = np.load(outdir / s["vectors"], mmap_mode="r")
                out[row:row + len(part)] = part
                row += len(part)
            out.flush()
            del out
            os.replace(tmp, combined)
        vectors = np.load(combined, mmap_mode="r")
    return EmbeddingSet(ids, vectors, manifest)


def options_dict(options: EmbedOptions) -> dict[str, Any]:
    return asdict(options)


def shard_count(documents: int, shard_size: int) -> int:
    return max(1, math.ceil(documents / shard_size))
