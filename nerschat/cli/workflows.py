"""`nerschat judge` and `nerschat run-batch`: sharded, resumable batch runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.text import Text

from nerschat.cli.common import console, one_line, registry_option
from nerschat.errors import FailureError
from nerschat.judging.cli_options import judging_kwargs, judging_options, task_from_options
from nerschat.judging.report import summarize_output, summary_table
from nerschat.workflows.batch import BATCH_URLS
from nerschat.workflows.core import RunReport, ShardRunner, run_items
from nerschat.workflows.judge import DEFAULT_SYSTEM_PROMPT
from nerschat.workflows.summary import batch_summary, failure_line, judge_summary
from nerschat.workflows.tasks import BatchTask, ItemTask

F = TypeVar("F", bound=Callable[..., Any])

ENVIRONMENT = """\b
With --config, also the variables that Parsl config reads (see docs/parsl-configs.md).
Exit status: 0 done (items that failed carry an `error`), 1 when every item failed or the
run could not go on (another run writing OUT), 2 for bad input or options (FILE:LINE:
field ...), an empty input or one whose every line is invalid, or an OUT that is the input
or a symbolic link (refused, never written through)."""


def execution_options(func: F) -> F:
    """Options every sharded workflow command shares."""
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
                     help="Parsl config file (e.g. parsl_configs/slurm.py): shards run as apps "
                          "on its executor. Default: in this process."),
        click.option("--executor", default="clients", show_default=True,
                     help="Executor label of the Parsl config that runs the shards."),
        click.option("--shards", type=click.IntRange(min=1), default=None,
                     help="Number of shards [default: 1 in-process, 4 with --config]."),
        click.option("--in-flight", type=click.IntRange(min=1), default=None,
                     help="Fixed number of items in flight per shard [default: adapted to "
                          "the endpoints' measured latency]."),
        click.option("--skip-invalid", is_flag=True,
                     help="Write invalid input lines to OUT.errors.jsonl and go on."),
        click.option("--restart", "restart_run", is_flag=True,
                     help="Discard earlier results of OUT (needed after changing the "
                          "configuration)."),
        click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
                     help="Seconds to wait for a ready endpoint."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        registry_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(task: ItemTask, input_path: str, output: str, *, model: str | None,
         registry_path: str | None, config_path: str | None, executor: str,
         shards: int | None, in_flight: int | None, skip_invalid: bool, restart_run: bool,
         timeout: float, no_progress: bool) -> RunReport:
    return run_items(
        task, input_path, output, registry=registry_path, model=model,
        shards=shards or (4 if config_path else 1), in_flight=in_flight,
        skip_invalid=skip_invalid, runner=ShardRunner(config_path, executor=executor),
        timeout=timeout, console=console, show_progress=not no_progress,
        restart_run=restart_run)


def _finish(report: RunReport) -> None:
    failed = failure_line(report)
    if failed is not None:
        raise FailureError(failed)


@click.command(epilog=ENVIRONMENT)
@click.argument("input_path", metavar="IN.jsonl", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output JSONL (id, answer, index, reasoning, logprobs, ...).")
@click.option("--model", default=None, help="Served model name [default: the one LLM served].")
@click.option("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, show_default=False)
@click.option("--template", "template_file", type=click.Path(dir_okay=False, exists=True),
              help="Prompt template file: Python format fields from the item, plus {candidates}.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--reasoning-tokens", "reasoning_tokens", type=click.IntRange(min=0), default=256,
              show_default=True,
              help="Tokens of reasoning before the verdict (0: none); capped so the final "
                   "step fits the model's context.")
@click.option("--max-tokens", "legacy_max_tokens", type=click.IntRange(min=0), default=None,
              hidden=True)
@click.option("--shuffle/--no-shuffle", default=False, show_default=True,
              help="Shuffle candidate order per item (seeded) against position bias.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--both-orders", is_flag=True,
              help="Judge each item in the given and reversed order; report agreement.")
@judging_options
@execution_options
def judge(input_path: str, output: str, model: str | None, system_prompt: str,
          template_file: str | None, temperature: float, reasoning_tokens: int,
          legacy_max_tokens: int | None, shuffle: bool, seed: int, both_orders: bool,
          **options: Any) -> None:
    """Judge answers with an LLM, by one of four protocols (--mode).

    \b
    best-of   each line {id, question, answers: [...]}: which answer is best
    pairwise  {id, question, answer_a, answer_b}: A, B or tie, both orders
    score     {id, question, answer}: an integer on --scale, with its expected value
    classify  {id, question, answer}: one of --labels, with its probability
    A summary (SUMMARY.json, and `nerschat judge-report OUT` for plots) follows the run.
    """  # noqa: D301 (click's \b paragraph marker must stay a backspace)
    if legacy_max_tokens is not None:
        reasoning_tokens = legacy_max_tokens  # the old name of --reasoning-tokens
    judging = judging_kwargs(options)
    task = task_from_options(
        model=model, system_prompt=system_prompt, template_file=template_file,
        temperature=temperature, reasoning_tokens=reasoning_tokens, shuffle=shuffle, seed=seed,
        both_orders=both_orders, **judging)
    report = _run(task, input_path, output, model=model, **options)
    if judging.get("mode", "best-of") == "best-of":
        # Streams: no second pass over a huge output.
        console.print(judge_summary(report, registry=options["registry_path"]))
    else:
        summary, path = summarize_output(output)
        console.print(summary_table(summary))
        console.print(Text(one_line(f"summary: {path}; plots: nerschat judge-report {output}")))
    _finish(report)


@click.command(name="run-batch", epilog=ENVIRONMENT)
@click.option("-i", "--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help=f"OpenAI batch JSONL (custom_id, method, url in {', '.join(BATCH_URLS)}, body).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output JSONL, the same lines as `vllm run-batch`.")
@execution_options
def run_batch(input_path: str, output: str, **run_options: Any) -> None:
    """Run an OpenAI batch file over every ready endpoint, resumably."""
    report = _run(BatchTask(), input_path, output, model=None, **run_options)
    console.print(batch_summary(report, registry=run_options["registry_path"]))
    _finish(report)
