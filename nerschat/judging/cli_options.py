"""The judging options of `nerschat judge`, ready to put on its click command.

Wiring into the command is two calls:

    @judging_options            # --mode, --scale, --labels, --field, --reference, ...
    def judge(..., **options):
        task = task_from_options(model=model, system_prompt=..., template_file=..., ...,
                                 **judging_kwargs(options))
        ... run the task ...
        summary, path = summarize_output(output)          # nerschat.judging.report
        console.print(summary_table(summary))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from nerschat.judging.modes import JudgingConfigError, JudgingTask, make_task
from nerschat.judging.templates import MODES, load_template
from nerschat.workflows.judge import DEFAULT_SYSTEM_PROMPT

F = TypeVar("F", bound=Callable[..., Any])

OPTION_NAMES = ("mode", "scale", "labels", "fields", "reference", "single_order", "gold_field",
                "group_field", "no_affinity")


def judging_options(func: F) -> F:
    """Add the judging options (see OPTION_NAMES) to a click command."""
    options = [
        click.option("--mode", type=click.Choice(MODES), default="best-of", show_default=True,
                     help="best-of: pick one of N answers; pairwise: A, B or tie; score: an "
                          "integer on --scale; classify: one of --labels."),
        click.option("--scale", default="1-10", show_default=True,
                     help="score: the integer range LOW-HIGH."),
        click.option("--labels", default="correct,incorrect", show_default=True,
                     help="classify: 'a,b,c', or with descriptions 'a=...;b=...'."),
        click.option("--field", "fields", multiple=True, metavar="NAME=KEY",
                     help="Read template field NAME from input key KEY (e.g. "
                          "answer_a=response_1). Repeatable."),
        click.option("--reference", is_flag=True,
                     help="Use the reference-guided template (needs a 'reference' field)."),
        click.option("--single-order", is_flag=True,
                     help="pairwise: judge only the given order (default: both)."),
        click.option("--gold-field", default="gold", show_default=True,
                     help="Input key of the expected verdict (accuracy, kappa)."),
        click.option("--group-field", default="group", show_default=True,
                     help="Input key to group scores and labels by in the summary."),
        click.option("--no-affinity", is_flag=True,
                     help="Do not send the X-Nerschat-Affinity routing header."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def judging_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """Pop the judging options out of a command's keyword arguments."""
    return {name: options.pop(name) for name in OPTION_NAMES if name in options}


def parse_fields(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """('question=prompt', ...) -> {'question': 'prompt'}; JudgingConfigError otherwise."""
    mapping = {}
    for pair in pairs:
        name, sep, key = pair.partition("=")
        if not sep or not name.strip() or not key.strip():
            raise JudgingConfigError(f"--field {pair!r}: expected NAME=KEY, e.g. "
                                     "answer_a=response_1")
        mapping[name.strip()] = key.strip()
    return mapping


def task_from_options(*, mode: str = "best-of", model: str | None = None,
                      system_prompt: str | None = None, template_file: str | None = None,
                      temperature: float = 0.0, reasoning_tokens: int = 256,
                      shuffle: bool = False, seed: int = 0, both_orders: bool = False,
                      scale: str = "1-10", labels: str = "correct,incorrect",
                      fields: tuple[str, ...] = (), reference: bool = False,
                      single_order: bool = False, gold_field: str = "gold",
                      group_field: str = "group", no_affinity: bool = False) -> JudgingTask:
    """The task `nerschat judge` runs, from its options. Raises a UsageError for bad ones.

    `system_prompt` equal to best-of's default (or None) means the mode's own default.
    `shuffle`, `seed`, `both_orders` are best-of's; pairwise judges both orders unless
    `single_order`.
    """
    template = load_template(template_file) if template_file else None
    if system_prompt == DEFAULT_SYSTEM_PROMPT and mode != "best-of":
        system_prompt = None
    common: dict[str, Any] = {"model": model, "temperature": temperature,
                              "reasoning_tokens": reasoning_tokens, "affinity": not no_affinity}
    if mode == "best-of":
        if fields or reference:
            raise JudgingConfigError("--field and --reference are for the pairwise, score and "
                                     "classify modes; best-of reads {question} and {answers}")
        return make_task("best-of", system_prompt=system_prompt or DEFAULT_SYSTEM_PROMPT,
                         template=template, shuffle=shuffle, seed=seed,
                         both_orders=both_orders, **common)
    common.update(system_prompt=system_prompt, template=template, reference=reference,
                  field_map=parse_fields(fields), gold_field=gold_field,
                  group_field=group_field)
    if mode == "pairwise":
        return make_task("pairwise", both_orders=not single_order, **common)
    if mode == "score":
        return make_task("score", scale=scale, **common)
    return make_task("classify", labels=labels, **common)
