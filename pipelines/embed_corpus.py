"""A complete Parsl workflow: start embedding pilots with a config, embed a corpus, stop them.

    python pipelines/embed_corpus.py examples/data/corpus.jsonl -o out/corpus-embeddings \
        --config parsl_configs/local.py --engine vllm --model local:minilm --pilots 1

On Perlmutter: `--engine tei --model BAAI/bge-large-en-v1.5 --pilots 8 --prompt-name passage
--config parsl_configs/perlmutter.py`. Finished shards are kept: rerun to resume.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from nerschat.parsl.config import parsl_session, pilot_options_of
from nerschat.parsl.pilots import running_pilots
from nerschat.registry import Registry
from nerschat.workflows.embed import EmbedOptions
from nerschat.workflows.embed_run import run_embed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--config", default="parsl_configs/local.py")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--model", default="local:minilm")
    parser.add_argument("--pilots", type=int, default=1)
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--prompt-name", default=None)
    parser.add_argument("--prefix", default="")
    parser.add_argument("--registry", default=os.environ.get("NERSCHAT_REGISTRY"))
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    parser.add_argument("--query", action="append", default=[],
                        help="after embedding, print this query's nearest documents")
    return parser.parse_args()


def nearest(query: str, model: str, registry: Registry, outdir: Path, k: int = 3
            ) -> list[tuple[float, str]]:
    """Cosine nearest neighbours of a query among the embedded documents."""
    import numpy as np

    import nerschat

    client = nerschat.connect(model, registry=registry, wait_timeout=60)
    vector = np.asarray(client.embeddings.create(model=model, input=[query]).data[0].embedding,
                        dtype=np.float32)
    found = nerschat.load_embeddings(outdir)
    scores = found.vectors @ vector / (np.linalg.norm(found.vectors, axis=1) *
                                       np.linalg.norm(vector))
    best = np.argsort(-scores)[:k]
    return [(float(scores[i]), found.ids[i]) for i in best]


def main() -> None:
    args = parse_args()
    console = Console(stderr=True)
    registry = Registry(args.registry)
    with parsl_session(args.config) as module:
        assert module is not None
        with running_pilots(args.engine, args.model, args.pilots, registry=registry,
                            ready_timeout=args.ready_timeout, console=console, kind="embedding",
                            **pilot_options_of(module)) as ready:
            options = EmbedOptions(model=ready[0].model, prompt_name=args.prompt_name,
                                   prefix=args.prefix)
            report = run_embed(args.input, args.output, registry=str(registry.path),
                               options=options, shards=args.shards, parsl_loaded=True,
                               console=console)
            for query in args.query:
                hits = nearest(query, ready[0].model, registry, args.output)
                console.print(f"query: {query}")
                for score, doc_id in hits:
                    console.print(f"  {score:.3f}  {doc_id}")
        manifest = report.manifest
        console.print(f"embedded {manifest['count']} documents with {manifest['model']} "
                      f"(dimension {manifest['dimension']}, {manifest['truncated']} truncated) "
                      f"into {args.output}; {report.texts_per_second:.1f} texts/s")


if __name__ == "__main__":
    main()
