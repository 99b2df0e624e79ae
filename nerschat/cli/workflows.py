"""`nerschat judge` and `nerschat run-batch`: sharded, resumable batch runs."""

from __future__ import annotations

from pathlib import Path

import click

from nerschat.cli.common import console, fail, registry_option
from nerschat.client.readiness import EndpointTimeout
from nerschat.parsl.config import ConfigError
from nerschat.workflows.batch import BATCH_URLS
from nerschat.workflows.inputs import InputError
from nerschat.workflows.judge import DEFAULT_SYSTEM_PROMPT, JudgeOptions
from nerschat.workflows.orchestrate import AmbiguousModel, RunReport, ShardRunner, run_items
from nerschat.workflows.summary import batch_summary, judge_summary
from nerschat.workflows.tasks import BatchTask, ItemTask, JudgeTask


def execution_options(func):  # type: ignore[no-untyped-def]
    options = [
        click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
                     help="Parsl config file (e.g. parsl_configs/slurm.py): shards run as apps "
                          "on its 'clients' executor. Default: in this process."),
        click.option("--shards", type=click.IntRange(min=1), default=None,
                     help="Number of shards [default: 1 in-process, 4 with --config]."),
        click.option("--in-flight", type=click.IntRange(min=1), default=None,
                     help="Items in flight per shard [default: the endpoints' capacity / shards]."),
        click.option("--skip-invalid", is_flag=True,
                     help="Write invalid input lines to OUT.errors.jsonl and go on."),
        click.option("--timeout", type=click.FloatRange(min=0), default=600.0, show_default=True,
                     help="Seconds to wait for a ready endpoint."),
        click.option("--no-progress", is_flag=True, help="No progress bar."),
        registry_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(task: ItemTask, input_path: str, output: str, *, model: str | None,
         registry_path: str | None, config_path: str | None, shards: int | None,
         in_flight: int | None, skip_invalid: bool, timeout: float, no_progress: bool,
         shared: bool = False) -> RunReport:
    del shared  # clients only read the registry
    try:
        return run_items(
            task, input_path, output, registry=registry_path, model=model,
            shards=shards or (4 if config_path else 1), in_flight=in_flight,
            skip_invalid=skip_invalid, runner=ShardRunner(config_path), timeout=timeout,
            console=console, show_progress=not no_progress)
    except InputError as exc:
        fail(f"{exc} (nothing was lost; fix the line or use --skip-invalid)", code=2)
    except (EndpointTimeout, ConfigError, AmbiguousModel) as exc:
        fail(str(exc))
    raise AssertionError("unreachable")


@click.command()
@click.argument("input_path", metavar="IN.jsonl", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output JSONL (id, answer, index, reasoning, logprobs, ...).")
@click.option("--model", default=None, help="Served model name [default: any LLM endpoint].")
@click.option("--system-prompt", default=DEFAULT_SYSTEM_PROMPT, show_default=False)
@click.option("--template", "template_file", type=click.Path(dir_okay=False, exists=True),
              help="Prompt template file: Python format fields from the item, plus {candidates}.")
@click.option("--temperature", type=float, default=0.0, show_default=True)
@click.option("--max-tokens", "reasoning_tokens", type=click.IntRange(min=0), default=256,
              show_default=True, help="Tokens of reasoning before the verdict (0: none).")
@click.option("--shuffle/--no-shuffle", default=False, show_default=True,
              help="Shuffle candidate order per item (seeded) against position bias.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--both-orders", is_flag=True,
              help="Judge each item in the given and reversed order; report agreement.")
@execution_options
def judge(input_path: str, output: str, model: str | None, system_prompt: str,
          template_file: str | None, temperature: float, reasoning_tokens: int, shuffle: bool,
          seed: int, both_orders: bool, **run_options: object) -> None:
    """Judge candidate answers with an LLM: each line {id, question, answers: [...]}."""
    options = JudgeOptions(
        model=model, system_prompt=system_prompt, temperature=temperature,
        reasoning_tokens=reasoning_tokens, shuffle=shuffle, seed=seed, both_orders=both_orders)
    if template_file:
        options.template = Path(template_file).read_text(encoding="utf-8")
    report = _run(JudgeTask(options), input_path, output, model=model, **run_options)  # type: ignore[arg-type]
    console.print(judge_summary(report))


@click.command(name="run-batch")
@click.option("-i", "--input", "input_path", required=True, type=click.Path(dir_okay=False),
              help=f"OpenAI batch JSONL (custom_id, method, url in {', '.join(BATCH_URLS)}, body).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Output JSONL, the same lines as `vllm run-batch`.")
@execution_options
def run_batch(input_path: str, output: str, **run_options: object) -> None:
    """Run an OpenAI batch file over every ready endpoint, resumably."""
    report = _run(BatchTask(), input_path, output, model=None, **run_options)  # type: ignore[arg-type]
    console.print(batch_summary(report))
