"""A complete Parsl workflow: start LLM pilots with a config, judge a file, stop the pilots.

    python pipelines/batch_judge.py examples/data/judge_sample.jsonl -o out/judged.jsonl \
        --config parsl_configs/local.py --engine vllm --model local:gemma-3-270m --pilots 1

On Perlmutter: `--config parsl_configs/perlmutter.py --model meta-llama/... --pilots 8`
(two GPU nodes, one server per GPU, client shards on CPU nodes). Resumable: rerun the same
command after an interruption and only the missing items are judged.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console

from nerschat.parsl.config import parsl_session, pilot_options_of
from nerschat.parsl.pilots import running_pilots
from nerschat.registry import Registry
from nerschat.workflows.core import ShardRunner, run_items
from nerschat.workflows.judge import JudgeOptions
from nerschat.workflows.summary import judge_summary
from nerschat.workflows.tasks import JudgeTask


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--config", default="parsl_configs/local.py")
    parser.add_argument("--engine", default="vllm")
    parser.add_argument("--model", default="local:gemma-3-270m")
    parser.add_argument("--pilots", type=int, default=1, help="servers to start")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--reasoning-tokens", "--max-tokens", dest="reasoning_tokens", type=int,
                        default=256, help="tokens of reasoning before the verdict (0: none)")
    parser.add_argument("--shuffle", action="store_true")
    parser.add_argument("--registry", default=os.environ.get("NERSCHAT_REGISTRY"))
    parser.add_argument("--ready-timeout", type=float, default=900.0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console(stderr=True)
    registry = Registry(args.registry)
    with parsl_session(args.config) as module:
        assert module is not None
        with running_pilots(args.engine, args.model, args.pilots, registry=registry,
                            ready_timeout=args.ready_timeout, console=console,
                            **pilot_options_of(module)) as ready:
            options = JudgeOptions(reasoning_tokens=args.reasoning_tokens, shuffle=args.shuffle)
            report = run_items(JudgeTask(options), args.input, args.output,
                               registry=str(registry.path), model=ready[0].model,
                               shards=args.shards, runner=ShardRunner(parsl_loaded=True),
                               console=console)
        console.print(judge_summary(report))


if __name__ == "__main__":
    main()
