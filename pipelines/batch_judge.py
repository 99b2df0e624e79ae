"""A complete Parsl workflow: start LLM pilots with a config, judge a file, stop the pilots.

    python pipelines/batch_judge.py examples/data/judge_sample.jsonl -o out/judged.jsonl \
        --config parsl_configs/local.py --engine vllm --model local:gemma-3-270m --pilots 1

On Perlmutter: `--config parsl_configs/perlmutter.py --model meta-llama/... --pilots 8`
(two GPU nodes, one server per GPU, client shards on CPU nodes). Resumable: rerun the same
command after an interruption and only the missing items are judged.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from nerschat.parsl.config import add_pilot_arguments
from nerschat.parsl.pilots import add_pool_arguments, pipeline_pilots
from nerschat.workflows.core import ShardRunner, run_items
from nerschat.workflows.judge import JudgeOptions
from nerschat.workflows.summary import judge_summary
from nerschat.workflows.tasks import JudgeTask


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_pilot_arguments(parser, model="local:gemma-3-270m")
    add_pool_arguments(parser)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--reasoning-tokens", "--max-tokens", dest="reasoning_tokens", type=int,
                        default=256, help="tokens of reasoning before the verdict (0: none)")
    parser.add_argument("--shuffle", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    console = Console(stderr=True)
    with pipeline_pilots(args, console) as (registry, ready):
        options = JudgeOptions(reasoning_tokens=args.reasoning_tokens, shuffle=args.shuffle)
        report = run_items(JudgeTask(options), args.input, args.output,
                           registry=str(registry.path), model=ready[0].model,
                           shards=args.shards, runner=ShardRunner(parsl_loaded=True),
                           console=console)
        console.print(judge_summary(report, registry=registry))


if __name__ == "__main__":
    main()
