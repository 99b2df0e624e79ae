from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from nerschat.judging.cli_options import (
    judging_kwargs,
    judging_options,
    parse_fields,
    task_from_options,
)
from nerschat.judging.modes import (
    BestOfTask,
    ClassifyTask,
    JudgingConfigError,
    PairwiseTask,
    ScoreTask,
)
from nerschat.workflows.inputs import FieldError
from nerschat.workflows.judge import DEFAULT_SYSTEM_PROMPT


def build(argv: list[str]) -> Any:
    built: dict[str, Any] = {}

    @click.command()
    @click.option("--model", default=None)
    @judging_options
    def judge(model: str | None, **options: Any) -> None:
        built["task"] = task_from_options(model=model, **judging_kwargs(options))
        built["rest"] = options

    result = CliRunner().invoke(judge, argv, standalone_mode=False)
    if result.exception:
        raise result.exception
    return built["task"]


def test_each_mode_from_command_line_options() -> None:
    assert isinstance(build([]), BestOfTask)
    pair = build(["--mode", "pairwise", "--field", "answer_a=left", "--field", "answer_b=right",
                  "--single-order", "--no-affinity"])
    assert isinstance(pair, PairwiseTask)
    assert pair.options.field_map == {"answer_a": "left", "answer_b": "right"}
    assert pair.options.both_orders is False and pair.options.affinity is False
    score = build(["--mode", "score", "--scale", "0-4", "--reference", "--model", "m"])
    assert isinstance(score, ScoreTask) and score.labels == ["0", "1", "2", "3", "4"]
    assert "{reference}" in score.template and score.options.model == "m"
    classify = build(["--mode", "classify", "--labels", "yes=true;no=false"])
    assert isinstance(classify, ClassifyTask) and classify.options.descriptions == {
        "yes": "true", "no": "false"}


def test_mode_default_system_prompt_and_template_file(tmp_path: Path) -> None:
    task = task_from_options(mode="score", system_prompt=DEFAULT_SYSTEM_PROMPT)
    assert task.options.system_prompt is None  # the score mode's own prompt
    template = tmp_path / "t.txt"
    template.write_text("Rate {answer} to {question} from {scale_min} to {scale_max}; "
                        "topic {topic}")
    task = task_from_options(mode="score", template_file=str(template))
    with pytest.raises(FieldError) as caught:
        task.parse({"id": "1", "question": "q", "answer": "a"})
    assert caught.value.field == "topic"


def test_bad_field_mapping_and_best_of_misuse() -> None:
    with pytest.raises(JudgingConfigError, match="NAME=KEY"):
        parse_fields(["question"])
    with pytest.raises(JudgingConfigError, match="best-of"):
        task_from_options(mode="best-of", reference=True)
