"""Embedding a corpus: batched to each endpoint's limits, sharded, resumable, streaming.

    OUTDIR/shard-00000.npy        float32 [n, dim], rows in input order; NaN rows for
                                  documents the server rejected (see manifest "errors")
    OUTDIR/shard-00000.ids.jsonl  the n ids, one JSON string per line
    OUTDIR/shard-00000.json       the shard's summary, written last (the shard is done)
    OUTDIR/manifest.json          model, dimension, count, errors, shards + sha256
    OUTDIR/.work/                 configuration, shard inputs, progress

The plan, configuration check and progress are those of the item workflows
(`nerschat.workflows.core`): the configuration (model, prompt name, prefix, truncation) is
fingerprinted, and each shard records a digest of its documents, so a rerun keeps exactly
the shards whose documents are unchanged and recomputes the others.

Batching follows the limits the endpoints advertise in the registry (`api`,
`max_batch_size`, `max_batch_tokens`, `max_input_tokens`; the smallest over the replicas, so
every request fits whichever replica it goes to), and bodies stay under TEI's 2 MB. Texts
longer than any model takes are cut on the client (counted as truncated); a request the
server still rejects as too large (HTTP 413/422, or 400 naming the length) is split until the
one document is isolated, which is then truncated by the server or, with `truncate=False`,
recorded as that document's error.
"""

from __future__ import annotations

import array
import asyncio
import base64
import hashlib
import json
import math
import os
import random
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import numpy as np
from rich.console import Console
from rich.markup import escape

from nerschat.errors import FailureError, UsageError
from nerschat.registry import Endpoint, Registry
from nerschat.workflows.atomic import atomic_write, write_json
from nerschat.workflows.core import check_config, initial_limit, repeated
from nerschat.workflows.corpus import Document, iter_corpus
from nerschat.workflows.inputs import InputError, invalid_line
from nerschat.workflows.pace import AdaptiveLimit, drive

BODY_LIMIT = 1_800_000  # bytes of text per request, under TEI's 2 MB body limit
CHARS_PER_TOKEN = 3  # conservative estimate for token budgets
MAX_CHARS_PER_TOKEN = 16  # a text longer than this many characters per token is cut
DEFAULT_BATCH = 64
DEFAULT_SHARD_SIZE = 4096
MAX_IN_FLIGHT_PER_ENDPOINT = 128  # batches; bounds the texts and vectors held at once
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
    """How much one request may carry: the smallest limits over the ready replicas."""

    api: str  # "tei" (/embed) or "openai" (/v1/embeddings)
    batch_size: int
    max_input_tokens: int | None
    max_batch_tokens: int | None

    @classmethod
    def of(cls, endpoints: list[Endpoint]) -> ServerLimits:
        """From the registry entries (filled by each pilot from its engine)."""
        if not endpoints:
            raise EmbedError("no ready embedding endpoint")
        apis = {e.api or "openai" for e in endpoints}
        api = "tei" if apis == {"tei"} else "openai"

        def smallest(values: list[int | None]) -> int | None:
            known = [v for v in values if v]
            return min(known) if known else None

        return cls(api, smallest([e.max_batch_size for e in endpoints]) or DEFAULT_BATCH,
                   smallest([e.max_input_tokens or e.max_model_len for e in endpoints]),
                   smallest([e.max_batch_tokens for e in endpoints]))


def plan_batches(texts: list[str], limits: ServerLimits, batch_size: int | None) -> list[range]:
    """Consecutive index ranges that respect count, estimated tokens and body size."""
    cap = min(batch_size or limits.batch_size, limits.batch_size)
    batches, start, size, tokens = [], 0, 0, 0
    for i, text in enumerate(texts):
        length = len(text.encode("utf-8", "replace"))
        estimate = len(text) // CHARS_PER_TOKEN + 1
        if limits.max_input_tokens:
            estimate = min(estimate, limits.max_input_tokens)
        full = (i - start >= cap or size + length > BODY_LIMIT
                or (limits.max_batch_tokens is not None
                    and tokens + estimate > limits.max_batch_tokens))
        if i > start and full:
            batches.append(range(start, i))
            start, size, tokens = i, 0, 0
        size += length
        tokens += estimate
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
    """Rows of one batch (None: the document's error is in `errors`)."""

    rows: list[np.ndarray | None]
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
                 model: str):
        self.http = http
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
            try:
                response = await self.http.post(path, json=body)
            except httpx2.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in (408, 429, 500, 502, 503, 504):
                    return response
                error = f"HTTP {response.status_code}: {response.text[:200]}"
            if attempt < ATTEMPTS:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        raise EmbedError(f"embedding request failed {ATTEMPTS} times: {error}")

    def _decode(self, response: httpx2.Response, count: int) -> tuple[list[np.ndarray], int]:
        try:
            payload = response.json()
            if self.limits.api == "tei":
                rows = [np.asarray(r, dtype=np.float32) for r in payload]
                tokens = 0
            else:
                data = sorted(payload["data"], key=lambda d: d["index"])
                rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype=np.float32)
                        for d in data]
                tokens = int((payload.get("usage") or {}).get("prompt_tokens") or 0)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise EmbedError(f"reply is not an embedding list ({type(exc).__name__}: "
                             f"{str(exc)[:100]})") from None
        if len(rows) != count or len({r.shape for r in rows}) > 1 or rows[0].ndim != 1:
            raise EmbedError(f"reply has {len(rows)} vectors of shapes "
                             f"{sorted({r.shape for r in rows})[:2]} for {count} texts")
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


# -- shard files --------------------------------------------------------------------------

def shard_files(outdir: Path, shard: int) -> tuple[Path, Path, Path]:
    """The vectors (`.npy`), ids (`.ids.jsonl`) and manifest (`.json`) paths of shard `shard`."""
    stem = f"shard-{shard:05d}"
    return outdir / f"{stem}.npy", outdir / f"{stem}.ids.jsonl", outdir / f"{stem}.json"


def _save(path: Path, writer: Any) -> str:
    digest = hashlib.sha256()
    with atomic_write(path, "wb") as handle:
        writer(handle)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(outdir: Path, shard: int, ids: list[str], rows: list[np.ndarray | None],
                summary: dict[str, Any]) -> dict[str, Any]:
    """Write one shard's vectors, ids and (last) summary; returns the summary."""
    vectors_path, ids_path, meta_path = shard_files(outdir, shard)
    dim = next((r.shape[0] for r in rows if r is not None), 0)
    matrix = np.full((len(rows), dim), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            matrix[i] = row
    good = matrix[~np.isnan(matrix).any(axis=1)] if dim else matrix[:0]
    norms = np.linalg.norm(good, axis=1) if len(good) else np.ones(0)
    summary.update({
        "shard": shard, "count": len(ids), "dimension": dim,
        "vectors": vectors_path.name, "ids": ids_path.name,
        "sha256": _save(vectors_path, lambda h: np.save(h, matrix)),
        "ids_sha256": _save(ids_path, lambda h: h.writelines(
            json.dumps(i).encode("ascii") + b"\n" for i in ids)),
        "normalized": bool(len(norms) and np.allclose(norms, 1.0, atol=1e-3)),
    })
    write_json(meta_path, summary)  # the shard counts as finished from here on
    return summary


@dataclass
class _OpenShard:
    number: int
    digest: str
    ids: list[str]
    texts: list[str]
    rows: list[np.ndarray | None]
    batches: int
    started: float
    tokens: int = 0
    truncated: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def _read_shard_input(path: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            doc = json.loads(line)
            ids.append(doc["id"])
            texts.append(doc["text"])
    return ids, texts


async def embed_shards_async(work: Path, outdir: Path, shards: list[tuple[int, str]], *,
                             registry: str | None, options: EmbedOptions,
                             timeout: float = 600.0, progress_path: Path | None = None
                             ) -> list[dict[str, Any]]:
    """Embed the given (shard number, digest) shards as one pipelined stream of batches."""
    from nerschat.client.connect import make_pool, routed_http_client

    pool = await asyncio.to_thread(make_pool, options.model,
                                   "embedding" if options.model is None else None, registry,
                                   timeout=timeout, wait=True, on_status=None,
                                   refresh_interval=2.0)
    http = routed_http_client(pool, timeout=timeout)
    pool.refresh(force=True)
    endpoints = [load.endpoint for load in pool.loads()]
    limits = ServerLimits.of(endpoints)
    model = options.model or endpoints[0].model
    embedder = Embedder(http, limits, options, model)
    maximum = MAX_IN_FLIGHT_PER_ENDPOINT * max(1, len(endpoints))
    limit: AdaptiveLimit | int = options.in_flight or AdaptiveLimit(
        initial=min(maximum, initial_limit(endpoints)), maximum=maximum)
    summaries: list[dict[str, Any]] = []
    progress = open(progress_path, "a", encoding="utf-8") if progress_path else None  # noqa: SIM115

    def units() -> Iterator[tuple[_OpenShard, range]]:
        for number, digest in shards:
            ids, texts = _read_shard_input(work / f"input-{number:05d}.jsonl")
            batches = plan_batches(texts, limits, options.batch_size)
            shard = _OpenShard(number, digest, ids, texts, [None] * len(ids), len(batches),
                               time.monotonic())
            for batch in batches:
                yield shard, batch

    async def handle(unit: tuple[_OpenShard, range]) -> None:
        shard, batch = unit
        outcome = await embedder.embed(shard.texts[batch.start:batch.stop])
        shard.rows[batch.start:batch.stop] = outcome.rows
        shard.tokens += outcome.tokens
        shard.truncated += outcome.truncated
        for i, message in outcome.errors.items():
            shard.errors[shard.ids[batch.start + i]] = message
        if progress is not None:
            progress.write(json.dumps({"n": len(batch), "tokens": outcome.tokens,
                                       "errors": len(outcome.errors)}) + "\n")
            progress.flush()
        shard.batches -= 1
        if shard.batches == 0:
            summaries.append(write_shard(outdir, shard.number, shard.ids, shard.rows, {
                "digest": shard.digest, "tokens": shard.tokens, "truncated": shard.truncated,
                "errors": shard.errors, "model": model,
                "seconds": round(time.monotonic() - shard.started, 3)}))
            shard.texts, shard.rows = [], []

    try:
        await drive(units(), handle, limit)
    finally:
        if progress is not None:
            progress.close()
        await http.aclose()
    return summaries


def embed_shard(work: str, outdir: str, shards: list[tuple[int, str]], registry: str | None,
                options: dict[str, Any], timeout: float = 600.0,
                progress_path: str | None = None) -> list[dict[str, Any]]:
    """Synchronous entry point: the body of the Parsl client app."""
    return asyncio.run(embed_shards_async(
        Path(work), Path(outdir), [(int(n), str(d)) for n, d in shards], registry=registry,
        options=EmbedOptions(**options), timeout=timeout,
        progress_path=Path(progress_path) if progress_path else None))


# -- plan, run, manifest --------------------------------------------------------------------

def _doc_hash(doc: Document) -> int:
    digest = hashlib.blake2b(digest_size=8)
    digest.update(doc.id.encode("utf-8"))
    digest.update(b"\0")
    digest.update(doc.text.encode("utf-8"))
    return int.from_bytes(digest.digest(), "little")


def _id_hash(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(),
                          "little")


@dataclass
class EmbedPlan:
    """Shards of the valid documents, with a digest of each shard's content."""

    digests: list[str]
    counts: list[int]
    todo: list[int]
    invalid: int


def _plan(source: str | Path, outdir: Path, work: Path, options: EmbedOptions, *,
          shards: int | None, skip_invalid: bool, id_field: str, text_field: str) -> EmbedPlan:
    hashes = array.array("Q")  # 16 bytes per document in all
    ids = array.array("Q")
    invalid = 0
    bad: set[int] = set()  # numbers of documents repeating an earlier id
    invalid_path = outdir / "invalid.jsonl"
    with atomic_write(invalid_path) as errors_out:
        for number, raw, entry in iter_corpus(source, id_field=id_field, text_field=text_field):
            if isinstance(entry, InputError):
                if not skip_invalid:
                    raise entry
                invalid += 1
                errors_out.write(invalid_line(number, str(entry), raw))
                continue
            hashes.append(_doc_hash(entry))
            ids.append(_id_hash(entry.id))
        all_hashes = np.frombuffer(hashes, dtype=np.uint64)
        repeats = repeated(np.frombuffer(ids, dtype=np.uint64))
        del ids
        if repeats:
            first: dict[str, int] = {}
            for number, raw, entry in iter_corpus(source, id_field=id_field,
                                                  text_field=text_field):
                if not isinstance(entry, Document) or _id_hash(entry.id) not in repeats:
                    continue
                if entry.id not in first:
                    first[entry.id] = number
                    continue
                error = InputError(source, number, id_field, f"duplicate id {entry.id!r} "
                                   f"(first at {first[entry.id]})")
                if not skip_invalid:
                    raise error
                invalid += 1
                bad.add(number)
                errors_out.write(invalid_line(number, str(error), raw))
        if bad:
            keep = np.ones(len(all_hashes), dtype=bool)
            valid = 0
            for number, _, entry in iter_corpus(source, id_field=id_field,
                                                text_field=text_field):
                if isinstance(entry, Document):
                    keep[valid] = number not in bad
                    valid += 1
            all_hashes = all_hashes[keep]
    if not invalid:
        invalid_path.unlink(missing_ok=True)
    total = len(all_hashes)
    if not total:
        raise PlanMismatch(f"{source}: no documents to embed")
    count = min(total, shards or max(1, math.ceil(total / DEFAULT_SHARD_SIZE)))
    bounds = np.linspace(0, total, count + 1).astype(np.int64)
    fingerprint = json.dumps(options.config(), sort_keys=True).encode()
    digests, counts, todo = [], [], []
    for n in range(count):
        part = all_hashes[bounds[n]:bounds[n + 1]]
        digests.append(hashlib.blake2b(part.tobytes() + fingerprint, digest_size=16).hexdigest())
        counts.append(len(part))
        meta = shard_files(outdir, n)[2]
        try:
            done = json.loads(meta.read_text())["digest"] == digests[-1]
        except (OSError, ValueError, KeyError, TypeError):
            done = False
        if not done:
            meta.unlink(missing_ok=True)
            todo.append(n)
    for stale in outdir.glob("shard-*.json"):
        if stale.stem.split("-")[1].isdigit() and int(stale.stem.split("-")[1]) >= count:
            for path in shard_files(outdir, int(stale.stem.split("-")[1])):
                path.unlink(missing_ok=True)
    # pass 2: the documents of the shards still to do, into their input files
    todo_set = set(todo)
    work.mkdir(parents=True, exist_ok=True)
    position = 0
    handle = None
    shard = -1
    for number, _, entry in iter_corpus(source, id_field=id_field, text_field=text_field):
        if not isinstance(entry, Document) or number in bad:
            continue
        while position >= bounds[shard + 1]:
            if handle is not None:
                handle.close()
                handle = None
            shard += 1
            if shard in todo_set:
                handle = open(work / f"input-{shard:05d}.jsonl", "w", encoding="utf-8")  # noqa: SIM115
        position += 1
        if handle is not None:
            handle.write(json.dumps({"id": entry.id, "text": entry.text}) + "\n")
    if handle is not None:
        handle.close()
    return EmbedPlan(digests, counts, todo, invalid)


@dataclass
class EmbedReport:
    """What an embed run did."""

    manifest: dict[str, Any]
    computed_shards: int
    reused_shards: int
    computed_texts: int
    invalid: int
    seconds: float

    @property
    def texts_per_second(self) -> float:
        """Texts embedded per second of wall time in this run (0.0 for a zero-length run)."""
        return self.computed_texts / self.seconds if self.seconds > 0 else 0.0


def _progress_weight(line: bytes) -> tuple[int, int, int]:
    record = json.loads(line)
    return int(record["n"]), int(record.get("errors", 0)), int(record.get("tokens", 0))


def run_embed(source: str | Path, outdir: str | Path, *, registry: str | None = None,
              options: EmbedOptions | None = None, shards: int | None = None,
              skip_invalid: bool = False, config_path: str | None = None,
              parsl_loaded: bool = False, executor: str = "clients", restart_run: bool = False,
              id_field: str = "id", text_field: str = "text", timeout: float = 600.0,
              console: Console | None = None, show_progress: bool = True) -> EmbedReport:
    """Embed `source` into `outdir` (see the module doc), resuming finished shards.

    Raises InputError (bad document), ConfigChanged (OUTDIR holds another configuration),
    EmbedError (the servers fail), EndpointTimeout (nothing ready within `timeout` s).
    """
    import shutil

    from nerschat.workflows.progress import LineCounter, RunProgress

    options = options or EmbedOptions()
    console = console or Console(stderr=True)
    outdir = Path(outdir)
    work = outdir / ".work"
    if restart_run:
        shutil.rmtree(outdir, ignore_errors=True)
    outdir.mkdir(parents=True, exist_ok=True)
    check_config(work, outdir, options.config())
    started = time.monotonic()
    plan = _plan(source, outdir, work, options, shards=shards, skip_invalid=skip_invalid,
                 id_field=id_field, text_field=text_field)
    if plan.invalid:
        console.print(f"[yellow]{plan.invalid} invalid document(s) skipped[/]; see "
                      f"{escape(str(outdir / 'invalid.jsonl'))}", highlight=False)
    remaining = sum(plan.counts[n] for n in plan.todo)
    reg = Registry.of(registry)
    if plan.todo:
        from nerschat.client.readiness import wait_for_endpoints

        ready = wait_for_endpoints(reg, options.model,
                                   "embedding" if options.model is None else None, timeout)
        if options.model is None:
            models = sorted({e.model for e in ready})
            if len(models) > 1:
                raise UsageError(f"several embedding models are ready ({', '.join(models)}): "
                                 "pass --model")
            options.model = models[0]
        check_config(work, outdir, options.config())
        write_json(work / "config.json", options.config())
        progress_files = [work / f"progress-{n:05d}.jsonl" for n in plan.todo]
        for path in [*progress_files, work / "progress.jsonl"]:
            path.unlink(missing_ok=True)
        uses_parsl = parsl_loaded or config_path is not None
        counter = LineCounter(lambda: progress_files if uses_parsl
                              else [work / "progress.jsonl"], weight=_progress_weight)
        jobs = [(n, plan.digests[n]) for n in plan.todo]
        with RunProgress(console, f"embed {Path(source).name}", remaining, counter, reg,
                         options.model, "embedding", enabled=show_progress, unit="texts"):
            if not uses_parsl:
                asyncio.run(embed_shards_async(work, outdir, jobs, registry=str(reg.path),
                                               options=options, timeout=timeout,
                                               progress_path=work / "progress.jsonl"))
            else:
                from nerschat.parsl.apps import embed_shard_app
                from nerschat.parsl.config import parsl_session

                with parsl_session(None if parsl_loaded else config_path):
                    app = embed_shard_app(executor)
                    futures = [app(str(work), str(outdir), [job], str(reg.path),
                                   asdict(options), timeout,
                                   str(work / f"progress-{job[0]:05d}.jsonl")) for job in jobs]
                    for future in futures:
                        future.result()
    manifest = _write_manifest(outdir, len(plan.digests), options)
    return EmbedReport(manifest, len(plan.todo), len(plan.digests) - len(plan.todo), remaining,
                       plan.invalid, time.monotonic() - started)


def _write_manifest(outdir: Path, count: int, options: EmbedOptions) -> dict[str, Any]:
    summaries = [json.loads(shard_files(outdir, n)[2].read_text()) for n in range(count)]
    dimension = max(s["dimension"] for s in summaries)
    for s in summaries:  # a shard whose every document was rejected has no width yet
        if s["dimension"] != dimension:
            matrix = np.full((s["count"], dimension), np.nan, dtype=np.float32)
            s["sha256"] = _save(outdir / s["vectors"], lambda h, m=matrix: np.save(h, m))
            s["dimension"] = dimension
            write_json(shard_files(outdir, s["shard"])[2], s)
    (outdir / "all.npy").unlink(missing_ok=True)  # made from an earlier set of shards
    manifest = {
        "model": summaries[0]["model"],
        "dimension": dimension,
        "count": sum(s["count"] for s in summaries),
        "dtype": "float32",
        "normalized": all(s["normalized"] for s in summaries if s["count"]),
        "prompt_name": options.prompt_name,
        "prefix": options.prefix,
        "truncated": sum(s["truncated"] for s in summaries),
        "errors": {k: v for s in summaries for k, v in s["errors"].items()},
        "tokens": sum(s["tokens"] for s in summaries),
        "shards": [{k: s[k] for k in ("shard", "count", "vectors", "ids", "sha256", "ids_sha256")}
                   for s in summaries],
    }
    write_json(outdir / "manifest.json", manifest)
    return manifest


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
