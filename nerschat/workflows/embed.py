"""Embedding a corpus: the embed task and the `.npy` sink of the workflow core.

    OUTDIR/shard-00000.npy        float32 [n, dim], rows in input order; NaN rows for
                                  documents that failed (see manifest "errors")
    OUTDIR/shard-00000.ids.jsonl  the n ids, one JSON string per line (ASCII escapes)
    OUTDIR/shard-00000.json       the shard's summary, written last
    OUTDIR/manifest.json          model, dimension, count, errors, shards + sha256
    OUTDIR/.work/                 the core's work directory (configuration, shards, results)
    OUTDIR/invalid.jsonl          invalid documents, with --skip-invalid

Plan, run and merge are those of every workflow (`nerschat.workflows.core`): the input is
read as a stream and validated before anything is sent, each document is known by a hash of
its record, the configuration (model, prompt name, prefix, truncation, fields) is
fingerprinted, and a rerun embeds only the documents without a vector. The merge writes the
shards in input order, keeping a shard file whose documents and configuration are unchanged.

Batches are sized to the limits of the endpoint each one goes to (`api`, `max_batch_size`,
`max_batch_tokens`, `max_input_tokens` of its registry entry), and bodies stay under TEI's
2 MB. Texts longer than the model takes are cut on the client (counted as truncated); a
request the server still rejects as too large (HTTP 413/422, or 400 naming the length) is
split until the one document is isolated, which is then truncated by the server or, with
`truncate=False`, recorded as that document's error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import os
import random
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx2
import numpy as np
from rich.console import Console

from nerschat.client.routing import DIMENSION_HEADER
from nerschat.errors import FailureError, UsageError
from nerschat.registry import Endpoint
from nerschat.workflows.atomic import atomic_write, write_json
from nerschat.workflows.core import (
    Order,
    Placement,
    ShardRunner,
    Sink,
    item_hash,
    result_files,
    run_items,
)
from nerschat.workflows.corpus import Document, Record, corpus_records, parse_document
from nerschat.workflows.inputs import iter_lines
from nerschat.workflows.outputs import OutputRefused, check_dir_output, clear_workdir
from nerschat.workflows.tasks import Clients

BODY_LIMIT = 1_800_000  # bytes of text per request, under TEI's 2 MB body limit
CHARS_PER_TOKEN = 3  # conservative estimate for token budgets
MAX_CHARS_PER_TOKEN = 16  # a text longer than this many characters per token is cut
DEFAULT_BATCH = 64
DEFAULT_SHARD_SIZE = 4096
ATTEMPTS = 3


class EmbedError(FailureError, RuntimeError):
    """A batch that cannot be embedded (after fail-over), or a bad option for the engine."""


class PlanMismatch(UsageError, ValueError):
    """OUTDIR cannot be used for this run."""


@dataclass
class EmbedOptions:
    """What the vectors depend on (fingerprinted), plus batching and concurrency."""

    model: str | None = None
    prompt_name: str | None = None
    prefix: str = ""
    truncate: bool = True
    batch_size: int | None = None
    in_flight: int | None = None

    def __post_init__(self) -> None:
        if self.prompt_name and self.prefix:
            raise UsageError("give either a prompt name or a prefix, not both")

    def config(self) -> dict[str, Any]:
        """What the vectors depend on (fingerprinted): model, prompt name, prefix, truncation."""
        return {"task": "embed", "model": self.model, "prompt_name": self.prompt_name,
                "prefix": self.prefix, "truncate": self.truncate}


@dataclass
class ServerLimits:
    """How much one request to one endpoint may carry."""

    api: str  # "tei" (/embed) or "openai" (/v1/embeddings)
    batch_size: int
    max_input_tokens: int | None
    max_batch_tokens: int | None

    @classmethod
    def of(cls, endpoint: Endpoint) -> ServerLimits:
        """The limits one endpoint advertises in its registry entry (filled by its pilot)."""
        return cls(endpoint.api or "openai", endpoint.max_batch_size or DEFAULT_BATCH,
                   endpoint.max_input_tokens or endpoint.max_model_len,
                   endpoint.max_batch_tokens)

    @classmethod
    def smallest(cls, endpoints: list[Endpoint]) -> ServerLimits:
        """Limits every one of `endpoints` takes (for work not sent to a known endpoint)."""
        if not endpoints:
            return cls("openai", DEFAULT_BATCH, None, None)
        each = [cls.of(e) for e in endpoints]

        def least(values: list[int | None]) -> int | None:
            known = [v for v in values if v]
            return min(known) if known else None

        return cls("tei" if all(x.api == "tei" for x in each) else "openai",
                   min(x.batch_size for x in each),
                   least([x.max_input_tokens for x in each]),
                   least([x.max_batch_tokens for x in each]))


class BatchPacker:
    """Fills one request for one endpoint: count, estimated tokens and body bytes."""

    def __init__(self, limits: ServerLimits, batch_size: int | None = None):
        self.limits = limits
        self.cap = min(batch_size or limits.batch_size, limits.batch_size)
        self.count = self.size = self.tokens = 0

    def add(self, doc: Document) -> bool:
        """Take `doc` if the request still has room for it (the first is always taken)."""
        text = doc.text
        length = len(text) if len(text) * 4 <= BODY_LIMIT else len(text.encode("utf-8", "replace"))
        estimate = len(text) // CHARS_PER_TOKEN + 1
        if self.limits.max_input_tokens:
            estimate = min(estimate, self.limits.max_input_tokens)
        if self.count and (self.count >= self.cap or self.size + length > BODY_LIMIT
                           or (self.limits.max_batch_tokens is not None
                               and self.tokens + estimate > self.limits.max_batch_tokens)):
            return False
        self.count += 1
        self.size += length
        self.tokens += estimate
        return True


def plan_batches(texts: list[str], limits: ServerLimits, batch_size: int | None) -> list[range]:
    """Consecutive index ranges of `texts` that one endpoint with `limits` takes per request."""
    batches: list[range] = []
    start = 0
    packer = BatchPacker(limits, batch_size)
    for i, text in enumerate(texts):
        if not packer.add(Document("", text)):
            batches.append(range(start, i))
            start = i
            packer = BatchPacker(limits, batch_size)
            packer.add(Document("", text))
    if start < len(texts):
        batches.append(range(start, len(texts)))
    return batches


def _rejected(response: httpx2.Response) -> bool:
    """The server refuses the request for its size (not for being broken)."""
    if response.status_code in (413, 422):
        return True
    text = response.text.lower()
    return response.status_code == 400 and any(
        s in text for s in ("too long", "maximum context length", "max_model_len", "less than",
                            "exceeds", "too large"))


def _cut(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


@dataclass
class BatchOutcome:
    """Rows of one batch: base64 float32 vectors (None: the document's error is in `errors`)."""

    rows: list[str | None]
    tokens: int = 0
    truncated_at: set[int] = field(default_factory=set)  # indexes in batch, each counted once
    errors: dict[int, str] = field(default_factory=dict)  # index in batch -> error

    @property
    def truncated(self) -> int:
        """How many documents of the batch the server truncated."""
        return len(self.truncated_at)


class Embedder:
    """Sends batches to the API of the endpoints, isolating documents the server rejects."""

    def __init__(self, http: httpx2.AsyncClient, limits: ServerLimits, options: EmbedOptions,
                 model: str, shared: dict[str, int] | None = None):
        """Requests to endpoints with `limits` through `http` (routed).

        `shared` holds what the embedders of one run agree on: `dimension`, the width of the
        first vectors received; a replica answering with another width (or count) is failed
        over by the transport, and its vectors are never written. Raises EmbedError for a
        prompt name on an engine without TEI's /embed.
        """
        self.http = http
        self.shared = shared if shared is not None else {}
        self.endpoint: Endpoint | None = None
        self.limits = limits
        self.options = options
        self.model = model
        if options.prompt_name and limits.api != "tei":
            raise EmbedError("prompt names need TEI's /embed; this engine has none: use --prefix")
        per_text = BODY_LIMIT
        if limits.max_input_tokens:
            per_text = min(per_text, limits.max_input_tokens * MAX_CHARS_PER_TOKEN)
        self.max_text_bytes = per_text

    async def _post(self, texts: list[str], truncate: bool) -> httpx2.Response:
        if self.limits.api == "tei":
            body: dict[str, Any] = {"inputs": texts, "truncate": truncate}
            if self.options.prompt_name:
                body["prompt_name"] = self.options.prompt_name
            path = "/embed"
        else:
            body = {"model": self.model, "input": texts, "encoding_format": "base64"}
            if truncate and self.limits.max_input_tokens:
                body["truncate_prompt_tokens"] = self.limits.max_input_tokens
            path = "/v1/embeddings"
        error = ""
        for attempt in range(1, ATTEMPTS + 1):
            dimension = self.shared.get("dimension")
            headers = {DIMENSION_HEADER: str(dimension)} if dimension else None
            try:
                response = await self.http.post(path, json=body, headers=headers)
            except httpx2.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in (408, 429, 500, 502, 503, 504):
                    return response
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt < ATTEMPTS:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        raise EmbedError(f"embedding request failed {ATTEMPTS} times: {error}")

    def _decode(self, response: httpx2.Response, count: int) -> tuple[list[str], int]:
        """(base64 float32 vectors, prompt tokens) of a reply; EmbedError if it is not one."""
        try:
            payload = response.json()
            if self.limits.api == "tei":
                rows = [base64.b64encode(np.asarray(r, dtype=np.float32).tobytes()).decode()
                        for r in payload if isinstance(r, list) and r]
                tokens = 0
            else:
                data = sorted(payload["data"], key=lambda d: d["index"])
                if [d["index"] for d in data] != list(range(len(data))):
                    raise ValueError("indexes repeat or are out of range")
                rows = [d["embedding"] if isinstance(d["embedding"], str) else
                        base64.b64encode(np.asarray(d["embedding"], dtype=np.float32).tobytes()
                                         ).decode() for d in data]
                tokens = int((payload.get("usage") or {}).get("prompt_tokens") or 0)
            width = len(base64.b64decode(rows[0], validate=True)) if rows else 0
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
            raise EmbedError(f"reply is not an embedding list ({type(exc).__name__}: "
                             f"{str(exc)[:100]})") from None
        if len(rows) != count or not width or width % 4 or len({len(r) for r in rows}) > 1:
            raise EmbedError(f"reply has {len(rows)} vectors of {sorted({len(r) for r in rows})[:2]}"
                             f" base64 characters for {count} texts")
        expected = self.shared.setdefault("dimension", width // 4)
        if width // 4 != expected:
            raise EmbedError(f"reply has vectors of dimension {width // 4}, not {expected} "
                             "like the others")
        return rows, tokens

    async def _isolate(self, texts: list[str], outcome: BatchOutcome, offset: int) -> None:
        """Embed `texts` into outcome.rows[offset:], splitting rejected requests."""
        response = await self._post(texts, truncate=False)
        if response.status_code == 200:
            rows, tokens = self._decode(response, len(texts))
            outcome.rows[offset:offset + len(texts)] = rows
            outcome.tokens += tokens
            return
        if not _rejected(response):
            raise EmbedError(f"HTTP {response.status_code}: {response.text[:300]}")
        if len(texts) > 1:
            half = len(texts) // 2
            await self._isolate(texts[:half], outcome, offset)
            await self._isolate(texts[half:], outcome, offset + half)
            return
        reason = f"rejected by the server (HTTP {response.status_code}: {response.text[:160]})"
        if self.options.truncate:
            retry = await self._post(texts, truncate=True)
            if retry.status_code == 200:
                rows, tokens = self._decode(retry, 1)
                outcome.rows[offset] = rows[0]
                outcome.tokens += tokens
                outcome.truncated_at.add(offset)
                return
            if not _rejected(retry):
                raise EmbedError(f"HTTP {retry.status_code}: {retry.text[:300]}")
            reason = f"rejected even truncated (HTTP {retry.status_code}: {retry.text[:160]})"
        outcome.errors[offset] = reason

    async def embed(self, texts: list[str]) -> BatchOutcome:
        """Vectors of `texts` (None rows for rejected documents, listed in `errors`)."""
        outcome = BatchOutcome(rows=[None] * len(texts))
        send: list[int] = []
        prepared: list[str] = []
        for i, text in enumerate(texts):
            text = self.options.prefix + text if self.options.prefix else text
            if len(text) * 4 > self.max_text_bytes and \
                    len(text.encode("utf-8")) > self.max_text_bytes:
                if not self.options.truncate:
                    outcome.errors[i] = (f"text of {len(text.encode('utf-8'))} bytes is longer "
                                         "than the model takes (use truncation)")
                    continue
                text = _cut(text, self.max_text_bytes)
                outcome.truncated_at.add(i)
            send.append(i)
            prepared.append(text)
        if prepared:
            part = BatchOutcome(rows=[None] * len(prepared))
            await self._isolate(prepared, part, 0)
            for j, i in enumerate(send):
                outcome.rows[i] = part.rows[j]
                if j in part.errors:
                    outcome.errors[i] = part.errors[j]
                if j in part.truncated_at:
                    outcome.truncated_at.add(i)
            outcome.tokens += part.tokens
        return outcome


# -- the task -------------------------------------------------------------------------------

class EmbedTask:
    """Documents to vectors, in batches sized to the endpoint each batch goes to."""

    name: str = "embed"
    key: str = "id"
    kind: str | None = "embedding"
    unit: str = "texts"

    def __init__(self, options: EmbedOptions | None = None, *, id_field: str = "id",
                 text_field: str = "text", shards: int | None = None):
        self.options = options or EmbedOptions()
        self.id_field, self.text_field = id_field, text_field
        self.sink = NpySink(shards)
        self._embedders: dict[str | None, Embedder] = {}
        self._shared: dict[str, int] = {}  # what every embedder of the run agrees on

    @property
    def model(self) -> str | None:
        """The embedding model (None until named or bound)."""
        return self.options.model

    def read(self, path: Path) -> Iterator[Record]:
        """The corpus at `path` (JSONL, a directory of text files, Parquet) as records."""
        return corpus_records(path, id_field=self.id_field, text_field=self.text_field)

    def parse(self, record: dict[str, Any]) -> Document:
        """A Document from one record; FieldError for a missing, non-string or empty field."""
        return parse_document(record, self.id_field, self.text_field)

    def item_id(self, item: Document) -> str:
        """The document's id."""
        return item.id

    def packer(self, endpoint: Endpoint | None) -> BatchPacker:
        """A batch for `endpoint`'s limits (None: not pinned; the defaults)."""
        limits = ServerLimits.of(endpoint) if endpoint is not None else ServerLimits.smallest([])
        return BatchPacker(limits, self.options.batch_size)

    def check_endpoints(self, ready: list[Endpoint]) -> None:
        """EmbedError if a prompt name is asked of endpoints without TEI's /embed."""
        if self.options.prompt_name and any((e.api or "openai") != "tei" for e in ready):
            raise EmbedError("prompt names need TEI's /embed; this engine has none: use --prefix")

    def _embedder(self, clients: Clients, endpoint: Endpoint | None) -> Embedder:
        key = endpoint.id if endpoint is not None else None
        embedder = self._embedders.get(key)
        if embedder is None or (endpoint is not None and embedder.endpoint != endpoint):
            limits = ServerLimits.of(endpoint) if endpoint is not None else \
                ServerLimits.smallest(clients.endpoints)
            embedder = Embedder(clients.http, limits, self.options, self.options.model or "",
                                self._shared)
            embedder.endpoint = endpoint
            self._embedders[key] = embedder
        return embedder

    async def process_batch(self, clients: Clients, endpoint: Endpoint | None,
                            docs: list[Document]) -> list[dict[str, Any]]:
        """One result per document, in order.

        `{"id", "error": None, "truncated", "tokens", "v"}` with `v` the base64 float32
        vector, or `{"id", "error": reason}`.
        """
        outcome = await self._embedder(clients, endpoint).embed([d.text for d in docs])
        share, extra = divmod(outcome.tokens, len(docs))
        results: list[dict[str, Any]] = []
        for i, doc in enumerate(docs):
            row = outcome.rows[i]
            if i in outcome.errors or row is None:
                results.append({"id": doc.id, "error": outcome.errors.get(i, "no vector")})
                continue
            results.append({"id": doc.id, "error": None, "truncated": i in outcome.truncated_at,
                            "tokens": share + (extra if i == 0 else 0), "v": row})
        return results

    async def process(self, clients: Clients, item: Document) -> dict[str, Any]:
        """One document alone (the core sends batches through `process_batch`)."""
        return (await self.process_batch(clients, None, [item]))[0]

    def error_result(self, item: Document, message: str) -> dict[str, Any]:
        """The result of a document whose batch failed with `message`."""
        return {"id": item.id, "error": message}

    def config(self) -> dict[str, Any]:
        """What the vectors depend on: the options' fingerprint and the input fields."""
        return {**self.options.config(), "id_field": self.id_field,
                "text_field": self.text_field}

    def to_dict(self) -> dict[str, Any]:
        """`{"task": "embed", "options": ...}`; `from_dict` rebuilds it on a Parsl worker."""
        return {"task": self.name, "options": asdict(self.options), "id_field": self.id_field,
                "text_field": self.text_field, "shards": self.sink.shards}

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> EmbedTask:
        """The task `to_dict()` describes."""
        return cls(EmbedOptions(**spec["options"]), id_field=spec.get("id_field", "id"),
                   text_field=spec.get("text_field", "text"), shards=spec.get("shards"))

    def needs_model(self) -> bool:
        """Always True: every request names one embedding model."""
        return True

    def bind_model(self, model: str) -> None:
        """Name the served model every request asks for."""
        self.options.model = model


# -- the sink: .npy shards ----------------------------------------------------------------

_OURS = re.compile(r"(shard-\d{5}\.(npy|ids\.jsonl|json)|manifest\.json|all\.npy|invalid\.jsonl)")


def written_here(name: str) -> bool:
    """Whether a file name in OUTDIR is one nerschat embed writes (or its temporary file)."""
    if name == ".work" or name == ".all.npy.tmp":
        return True
    if name.startswith(".") and name.endswith(".tmp"):  # atomic_write's .NAME.XXXX.tmp
        name = name[1:].rsplit(".", 2)[0]
    return _OURS.fullmatch(name) is not None

def shard_files(outdir: Path, shard: int) -> tuple[Path, Path, Path]:
    """The vectors (`.npy`), ids (`.ids.jsonl`) and summary (`.json`) paths of shard `shard`."""
    stem = f"shard-{shard:05d}"
    return outdir / f"{stem}.npy", outdir / f"{stem}.ids.jsonl", outdir / f"{stem}.json"


class _Hashing:
    """A binary handle that also computes the sha256 of what is written."""

    def __init__(self, handle: IO[bytes]):
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


@dataclass
class _ShardTotals:
    tokens: int = 0
    truncated: int = 0
    errors: dict[str, str] = field(default_factory=dict)
    normalized: bool = True


class NpySink(Sink):
    """Vectors into `.npy` shards of OUTDIR, in input order, with ids and a manifest.

    `shards`: how many shard files (None: one per DEFAULT_SHARD_SIZE documents).
    """

    def __init__(self, shards: int | None = None):
        self.shards = shards

    def workdir(self, output: Path) -> Path:
        """`OUTDIR/.work`."""
        return output / ".work"

    def errors_path(self, output: Path) -> Path:
        """`OUTDIR/invalid.jsonl`."""
        return output / "invalid.jsonl"

    def check_output(self, input_path: Path, output: Path) -> None:
        """OutputRefused if OUTDIR is or holds the input, or holds files nerschat did not write."""
        check_dir_output(input_path, output, written_here)
        manifest = output / "manifest.json"
        if manifest.exists() or manifest.is_symlink():
            try:
                if manifest.is_symlink() or manifest.stat().st_size > (64 << 20):
                    raise ValueError("not ours")
                value = json.loads(manifest.read_text(encoding="utf-8"))
                if not (isinstance(value, dict) and isinstance(value.get("shards"), list)
                        and value.get("dtype") == "float32"):
                    raise ValueError("not ours")
            except (OSError, ValueError):
                raise OutputRefused(f"{manifest}: not a manifest nerschat embed wrote; give a "
                                    "new or empty directory") from None

    def restart(self, output: Path) -> None:
        """Remove what nerschat wrote into OUTDIR (shards, manifest, work directory)."""
        clear_workdir(self.workdir(output))
        if not output.is_dir():
            return
        for entry in output.iterdir():
            if entry.name != ".work" and written_here(entry.name) and not entry.is_dir():
                entry.unlink(missing_ok=True)

    def count(self, total: int) -> int:
        """How many shard files `total` documents make."""
        return max(1, min(total, self.shards or math.ceil(total / DEFAULT_SHARD_SIZE)))

    def work_shards(self, total: int, requested: int | None) -> int:
        """As many shards to run as shard files to write (unless asked otherwise)."""
        return requested or self.count(total)

    def prepare(self, shards: list[tuple[Path, Path]], fresh: bool, output: Path,
                config: dict[str, Any]) -> None:
        """Write shard files while the run goes on, when that is possible.

        When every document is to do, work shards match shard files one to one, so each
        shard file is written as soon as its work shard finishes.
        """
        self._early: dict[Path, tuple[int, Path, bytes]] = {}
        if fresh and shards:
            fingerprint = json.dumps(config, sort_keys=True).encode()
            self._early = {shard_in: (n, output, fingerprint)
                           for n, (shard_in, _) in enumerate(shards)}

    def shard_finished(self, shard_in: Path, results: Path) -> None:
        """Write the shard file of a finished work shard (see `prepare`).

        The final merge keeps it when its documents and configuration match, else writes it
        again.
        """
        early = getattr(self, "_early", {}).get(shard_in)
        if early is None:
            return
        number, output, fingerprint = early
        part = np.array([item_hash(raw) for _, raw in iter_lines(shard_in)], dtype=np.uint64)
        with Placement([results], part, results.parent) as placement:
            dimension = _dimension(placement)
            if not dimension or not placement.all_ok():
                return
            digest = hashlib.blake2b(part.tobytes() + fingerprint, digest_size=16).hexdigest()
            config = json.loads(fingerprint)
            _write_shard(output, number, placement.bodies(), len(part), dimension,
                         {"digest": digest, "model": config.get("model")})

    def merge(self, workdir: Path, order: Order, output: Path,
              config: dict[str, Any]) -> dict[str, int]:
        """Write the shards (unchanged ones kept) and the manifest; PlanMismatch if empty."""
        total = len(order)
        if not total:
            raise PlanMismatch(f"no documents to embed into {output}")
        count = self.count(total)
        bounds = np.linspace(0, total, count + 1).astype(np.int64)
        fingerprint = json.dumps(config, sort_keys=True).encode()
        def part(n: int) -> np.ndarray:  # read again when needed: one part in memory at a time
            return order[int(bounds[n]):int(bounds[n + 1])]

        digests = [hashlib.blake2b(part(n).tobytes() + fingerprint, digest_size=16).hexdigest()
                   for n in range(count)]
        summaries: list[dict[str, Any] | None] = [
            _kept_shard(output, n, digest) for n, digest in enumerate(digests)]
        widths = {s["dimension"] for s in summaries if s is not None}
        if None in summaries or len(widths) > 1:
            with Placement(result_files(workdir), order, workdir) as placement:
                dimension = _dimension(placement)
                for n in range(count):
                    kept = summaries[n]
                    if kept is None or kept["dimension"] != dimension:
                        start, stop = int(bounds[n]), int(bounds[n + 1])
                        summaries[n] = _write_shard(output, n, placement.bodies(start, stop),
                                                    stop - start, dimension,
                                                    {"digest": digests[n],
                                                     "model": config.get("model")})
        for stale in output.glob("shard-*.json"):
            number = stale.stem.split("-")[1]
            if number.isdigit() and int(number) >= count:
                for path in shard_files(output, int(number)):
                    path.unlink(missing_ok=True)
        manifest = _write_manifest(output, [s for s in summaries if s is not None], config)
        return {"written": total - len(manifest["errors"]), "errors": len(manifest["errors"]),
                "missing": 0}


def _dimension(placement: Placement) -> int:
    """The width of the vectors found (0 if every document failed)."""
    body = placement.first_ok()
    if body is None:
        return 0
    return len(base64.b64decode(json.loads(body)["v"])) // 4


def _kept_shard(outdir: Path, shard: int, digest: str) -> dict[str, Any] | None:
    """The summary of an existing shard with these documents, configuration and no errors."""
    try:
        summary = json.loads(shard_files(outdir, shard)[2].read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("digest") != digest \
            or summary.get("errors") or not summary.get("dimension"):
        return None
    return summary


VECTOR_FIELD = b', "v": "'
"""How the vector field (base64, so without quotes) of an embed result line begins."""


def _write_shard(outdir: Path, shard: int, bodies: Iterator[tuple[bytes, bool] | None],
                 count: int, dimension: int, summary: dict[str, Any],
                 chunk: int = 4096) -> dict[str, Any]:
    """Write one shard's vectors and ids (streamed in chunks, atomically), then its summary."""
    vectors_path, ids_path, meta_path = shard_files(outdir, shard)
    totals = _ShardTotals()
    header = {"descr": "<f4", "fortran_order": False, "shape": (count, dimension)}
    with atomic_write(vectors_path, "wb") as raw_vectors, atomic_write(ids_path, "wb") as raw_ids:
        vectors, ids = _Hashing(raw_vectors), _Hashing(raw_ids)
        np.lib.format.write_array_header_1_0(vectors, header)
        id_lines: list[bytes] = []
        rows: list[bytes | None] = []
        for number, found in enumerate(bodies):
            if found is None:
                raise EmbedError(f"{outdir}: document #{number} of shard {shard} has no "
                                 "result (a shard did not finish): rerun to compute it")
            body, ok = found
            cut = body.rfind(VECTOR_FIELD) if ok else -1
            if cut >= 0:  # the vector is sliced out, not parsed
                start = cut + len(VECTOR_FIELD)
                end = body.index(b'"', start)
                head = json.loads((body[:cut] + body[end + 1:]).decode("utf-8",
                                                                       "surrogateescape"))
                rows.append(body[start:end])
                totals.tokens += int(head.get("tokens") or 0)
                totals.truncated += bool(head.get("truncated"))
            else:
                head = json.loads(body)
                rows.append(None)
                totals.errors[head["id"]] = str(head.get("error"))
            id_lines.append(json.dumps(head["id"]).encode("ascii") + b"\n")
            if len(rows) == chunk:
                _flush(vectors, ids, rows, id_lines, dimension, totals)
        _flush(vectors, ids, rows, id_lines, dimension, totals)
    summary.update({
        "shard": shard, "count": count, "dimension": dimension,
        "vectors": vectors_path.name, "ids": ids_path.name,
        "sha256": vectors.digest.hexdigest(), "ids_sha256": ids.digest.hexdigest(),
        "normalized": totals.normalized, "tokens": totals.tokens,
        "truncated": totals.truncated, "errors": totals.errors,
    })
    write_json(meta_path, summary)  # the shard counts as finished from here on
    return summary


def _flush(vectors: _Hashing, ids: _Hashing, rows: list[bytes | None], id_lines: list[bytes],
           dimension: int, totals: _ShardTotals) -> None:
    """Write a chunk of rows (base64 float32, None: NaN) and their ids; empties both lists."""
    block = np.full((len(rows), dimension), np.nan, dtype=np.float32)
    good = [i for i, row in enumerate(rows) if row is not None]
    if good and dimension:
        width = 4 * dimension
        if not (width % 3) and all(len(rows[i]) == width // 3 * 4 for i in good):  # type: ignore[arg-type]
            data = base64.b64decode(b"".join(rows[i] for i in good))  # type: ignore[misc]
            block[good] = np.frombuffer(data, dtype=np.float32).reshape(len(good), dimension)
        else:  # padded or odd widths: one at a time
            for i in good:
                row = np.frombuffer(base64.b64decode(rows[i]), dtype=np.float32)  # type: ignore[arg-type]
                if row.shape != (dimension,):
                    raise EmbedError(f"a vector of width {row.shape[0]} among vectors of "
                                     f"width {dimension}: rerun with --restart")
                block[i] = row
        norms = np.linalg.norm(block[good], axis=1)
        if not np.allclose(norms, 1.0, atol=1e-3):
            totals.normalized = False
    vectors.write(block.tobytes())
    ids.write(b"".join(id_lines))
    rows.clear()
    id_lines.clear()


def _write_manifest(outdir: Path, summaries: list[dict[str, Any]], config: dict[str, Any]
                    ) -> dict[str, Any]:
    (outdir / "all.npy").unlink(missing_ok=True)  # made from an earlier set of shards
    manifest = {
        "model": config.get("model"),
        "dimension": max(s["dimension"] for s in summaries),
        "count": sum(s["count"] for s in summaries),
        "dtype": "float32",
        "normalized": all(s["normalized"] for s in summaries if s["count"]),
        "prompt_name": config.get("prompt_name"),
        "prefix": config.get("prefix", ""),
        "truncated": sum(s["truncated"] for s in summaries),
        "errors": {k: v for s in summaries for k, v in s["errors"].items()},
        "tokens": sum(s["tokens"] for s in summaries),
        "shards": [{k: s[k] for k in ("shard", "count", "vectors", "ids", "sha256", "ids_sha256")}
                   for s in summaries],
    }
    write_json(outdir / "manifest.json", manifest)
    return manifest


# -- the run --------------------------------------------------------------------------------

@dataclass
class EmbedReport:
    """What an embed run did: texts embedded now, texts already done, invalid ones skipped."""

    manifest: dict[str, Any]
    computed_texts: int
    reused_texts: int
    invalid: int
    seconds: float

    @property
    def texts_per_second(self) -> float:
        """Texts embedded per second of wall time in this run (0.0 for a zero-length run)."""
        return self.computed_texts / self.seconds if self.seconds > 0 else 0.0


def run_embed(source: str | Path, outdir: str | Path, *, registry: str | None = None,
              options: EmbedOptions | None = None, shards: int | None = None,
              skip_invalid: bool = False, config_path: str | None = None,
              parsl_loaded: bool = False, executor: str = "clients", restart_run: bool = False,
              id_field: str = "id", text_field: str = "text", timeout: float = 600.0,
              console: Console | None = None, show_progress: bool = True) -> EmbedReport:
    """Embed `source` into `outdir` (see the module doc) with the workflow core, resumably.

    `shards`: shard files, and with Parsl also Parsl apps (default: a file per 4096
    documents; 4 apps). Raises InputError (bad document), ConfigChanged (OUTDIR holds another
    configuration), PlanMismatch (no documents), EmbedError (prompt name without TEI),
    EndpointTimeout (nothing ready within `timeout` s).
    """
    options = options or EmbedOptions()
    task = EmbedTask(options, id_field=id_field, text_field=text_field, shards=shards)
    runner = ShardRunner(config_path, executor=executor, parsl_loaded=parsl_loaded)
    report = run_items(task, source, outdir, registry=registry, model=options.model,
                       shards=shards or (4 if runner.uses_parsl else None),
                       in_flight=options.in_flight, skip_invalid=skip_invalid, runner=runner,
                       timeout=timeout, console=console, show_progress=show_progress,
                       restart_run=restart_run)
    manifest = json.loads((Path(outdir) / "manifest.json").read_text(encoding="utf-8"))
    return EmbedReport(manifest, report.processed, report.skipped_done, report.invalid,
                       report.seconds)


# -- reading the result ---------------------------------------------------------------------

def _read_ids(path: Path) -> list[str]:
    with open(path, encoding="ascii") as handle:
        return [json.loads(line) for line in handle]


@dataclass
class EmbeddingSet:
    """Ids (list of n str) and vectors (float32 [n, dim]) of a finished run, plus its manifest.

    Unpacks as `ids, vectors = load_embeddings(...)`. A document the server rejected has a
    NaN row; its id and reason are in `manifest["errors"]`.
    """

    ids: list[str]
    vectors: np.ndarray
    manifest: dict[str, Any]

    def __iter__(self) -> Iterator[Any]:
        yield self.ids
        yield self.vectors


def load_embeddings(outdir: str | os.PathLike[str], mmap: bool | None = None) -> EmbeddingSet:
    """Ids and a float32 matrix of a finished `nerschat embed` run.

    Rows of documents the server rejected (`manifest["errors"]`, id -> reason) are NaN. One
    shard is memory-mapped directly. Several shards are concatenated in memory, or, with
    `mmap=True` (default above 1 GiB), into `all.npy` once and memory-mapped from there.
    Raises FileNotFoundError if the run has not finished.
    """
    outdir = Path(outdir)
    manifest_path = outdir / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: the run has not finished")
    manifest = json.loads(manifest_path.read_text())
    shards = manifest["shards"]
    ids = [i for s in shards for i in _read_ids(outdir / s["ids"])]
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
