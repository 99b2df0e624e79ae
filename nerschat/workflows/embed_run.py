"""Planning, running and finishing a sharded `nerschat embed` run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from nerschat.client.readiness import wait_for_endpoints
from nerschat.errors import UsageError
from nerschat.registry import Registry
from nerschat.workflows.corpus import read_corpus
from nerschat.workflows.embed import (
    EmbedOptions,
    embed_shard,
    embed_shard_async,
    options_dict,
    shard_count,
    shard_files,
)
from nerschat.workflows.inputs import write_invalid
from nerschat.workflows.progress import LineCounter, RunProgress

DEFAULT_SHARD_SIZE = 4096


class PlanMismatch(UsageError, ValueError):
    """OUTDIR holds a run of another input or other settings."""


@dataclass
class EmbedReport:
    manifest: dict[str, Any]
    computed_shards: int
    reused_shards: int
    computed_texts: int
    seconds: float

    @property
    def texts_per_second(self) -> float:
        return self.computed_texts / self.seconds if self.seconds > 0 else 0.0


def _fingerprint(ids: list[str], texts: list[str], options: EmbedOptions) -> str:
    digest = hashlib.sha256()
    for doc_id, text in zip(ids, texts):
        digest.update(doc_id.encode() + b"\0" + hashlib.sha256(text.encode()).digest())
    digest.update(json.dumps(options_dict(options), sort_keys=True).encode())
    return digest.hexdigest()


def _plan(work: Path, ids: list[str], texts: list[str], options: EmbedOptions,
          shards: int) -> dict[str, Any]:
    """Write (or check) the plan: which documents go to which shard, fixed for the run."""
    fingerprint = _fingerprint(ids, texts, options)
    plan_path = work / "plan.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
        if plan["fingerprint"] != fingerprint:
            raise PlanMismatch(f"{work.parent} holds a run of another input or other options; "
                               "use a new output directory or delete it")
        return plan
    work.mkdir(parents=True, exist_ok=True)
    bounds, start = [], 0
    size, extra = divmod(len(ids), shards)
    for number in range(shards):
        end = start + size + (1 if number < extra else 0)
        with open(work / f"input-{number:05d}.jsonl", "w", encoding="utf-8") as handle:
            for i in range(start, end):
                handle.write(json.dumps({"id": ids[i], "text": texts[i]}, ensure_ascii=False) + "\n")
        bounds.append([start, end])
        start = end
    plan = {"fingerprint": fingerprint, "shards": bounds, "count": len(ids)}
    tmp = work / ".plan.json.tmp"
    tmp.write_text(json.dumps(plan))
    os.replace(tmp, plan_path)
    return plan


def _progress_weight(line: bytes) -> tuple[int, int, int]:
    record = json.loads(line)
    return int(record["n"]), int(record.get("errors", 0)), int(record.get("tokens", 0))


def run_embed(source: str | Path, outdir: str | Path, *, registry: str | None = None,
              options: EmbedOptions | None = None, shards: int | None = None,
              skip_invalid: bool = False, config_path: str | None = None,
              parsl_loaded: bool = False,
              id_field: str = "id", text_field: str = "text", timeout: float = 600.0,
              console: Console | None = None, show_progress: bool = True) -> EmbedReport:
    options = options or EmbedOptions()
    console = console or Console(stderr=True)
    outdir = Path(outdir)
    corpus = read_corpus(source, id_field=id_field, text_field=text_field,
                         skip_invalid=skip_invalid)
    outdir.mkdir(parents=True, exist_ok=True)
    if corpus.invalid:
        write_invalid(outdir / "invalid.jsonl", corpus.invalid)
        console.print(f"[yellow]{len(corpus.invalid)} invalid document(s) skipped[/]; see "
                      f"{outdir / 'invalid.jsonl'}", highlight=False)
    if not len(corpus):
        raise PlanMismatch(f"{source}: no documents to embed")
    work = outdir / ".work"
    plan = _plan(work, corpus.ids, corpus.texts, options,
                 shards or shard_count(len(corpus), DEFAULT_SHARD_SIZE))
    todo = [n for n in range(len(plan["shards"])) if not shard_files(outdir, n)[2].exists()]
    remaining = sum(plan["shards"][n][1] - plan["shards"][n][0] for n in todo)
    started = time.monotonic()
    reg = Registry.of(registry)
    if todo:
        wait_for_endpoints(reg, options.model, "embedding" if options.model is None else None,
                           timeout)
        progress_files = [work / f"progress-{n:05d}.jsonl" for n in todo]
        for path in progress_files:
            path.unlink(missing_ok=True)  # an unfinished shard starts over
        counter = LineCounter(lambda: progress_files, weight=_progress_weight)
        with RunProgress(console, f"embed {Path(source).name}", remaining, counter, reg,
                         options.model, "embedding", enabled=show_progress, unit="texts"):
            _run_shards(todo, work, outdir, str(reg.path), options, timeout, config_path,
                        parsl_loaded)
    manifest = _write_manifest(outdir, plan, options)
    return EmbedReport(manifest, len(todo), len(plan["shards"]) - len(todo), remaining,
                       time.monotonic() - started)


def _run_shards(todo: list[int], work: Path, outdir: Path, registry: str,
                options: EmbedOptions, timeout: float, config_path: str | None,
                parsl_loaded: bool = False) -> None:
    args = [(str(work / f"input-{n:05d}.jsonl"), str(outdir), n, registry, options_dict(options),
             timeout, str(work / f"progress-{n:05d}.jsonl")) for n in todo]
    if config_path is None and not parsl_loaded:
        for input_path, _, number, _, _, _, progress in args:  # one at a time: each fills the servers
            asyncio.run(embed_shard_async(Path(input_path), outdir, number, registry=registry,
                                          options=options, timeout=timeout,
                                          progress_path=Path(progress)))
        return
    import parsl

    from nerschat.parsl.config import CLIENT_EXECUTOR, parsl_session

    with parsl_session(None if parsl_loaded else config_path):
        app = parsl.python_app(embed_shard, executors=[CLIENT_EXECUTOR])
        for future in [app(*a) for a in args]:
            future.result()


def _write_manifest(outdir: Path, plan: dict[str, Any], options: EmbedOptions) -> dict[str, Any]:
    summaries = [json.loads(shard_files(outdir, n)[2].read_text())
                 for n in range(len(plan["shards"]))]
    manifest = {
        "model": summaries[0]["model"],
        "dimension": summaries[0]["dimension"],
        "count": sum(s["count"] for s in summaries),
        "dtype": "float32",
        "normalized": all(s["normalized"] for s in summaries),
        "prompt_name": options.prompt_name,
        "prefix": options.prefix,
        "truncated": sum(s["truncated"] for s in summaries),
        "errors": {k: v for s in summaries for k, v in s["errors"].items()},
        "tokens": sum(s["tokens"] for s in summaries),
        "shards": [{k: s[k] for k in ("shard", "count", "vectors", "ids", "sha256", "ids_sha256")}
                   for s in summaries],
    }
    tmp = outdir / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, outdir / "manifest.json")
    return manifest
