"""A complete Parsl workflow: start embedding pilots with a config, embed a corpus, stop them.

    python pipelines/embed_corpus.py examples/data/corpus.jsonl -o out/corpus-embeddings \
        --config parsl_configs/local.py --engine vllm --model local:minilm --pilots 1

On Perlmutter: `--engine tei --model BAAI/bge-large-en-v1.5 --pilots 8 --prompt-name passage
--config parsl_configs/perlmutter.py`. Finished shards are kept: rerun to resume.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console

from nerschat.parsl.config import add_pilot_arguments
from nerschat.parsl.pilots import add_pool_arguments, pipeline_pilots
from nerschat.registry import Registry
from nerschat.workflows.embed import EmbedOptions, run_embed
from nerschat.workflows.summary import cost_text, run_cost


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pilot_arguments(parser, model="local:minilm")
    add_pool_arguments(parser)
    parser.add_argument("--shards", type=int, default=None)
    parser.add_argument("--prompt-name", default=None)
    parser.add_argument("--prefix", default="")
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
    ids, vectors = nerschat.load_embeddings(outdir)
    scores = vectors @ vector / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(vector))
    best = np.argsort(-np.nan_to_num(scores, nan=-np.inf))[:k]
    return [(float(scores[i]), ids[i]) for i in best]


def main() -> None:
    args = parse_args()
    console = Console(stderr=True)
    with pipeline_pilots(args, console, kind="embedding") as (registry, ready):
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
        ended = time.time()
        cost = run_cost(registry, ready[0].model, ended - report.seconds, ended)
        console.print(cost_text(cost, report.computed_texts, 0), highlight=False)


if __name__ == "__main__":
    main()
