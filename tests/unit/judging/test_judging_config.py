"""Each mode's fingerprinted configuration survives config.json: a rerun resumes, a change not.

The run keeps its configuration as JSON (`OUT.parts/config.json`); a rerun compares what it
would write with what is there. A value whose Python form differs from its JSON form (a
tuple, which JSON reads back as a list) must still compare equal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nerschat.judging import make_task, task_from_dict
from nerschat.judging.modes import JudgingConfigError
from nerschat.workflows.core import ConfigChanged, check_config, task_config
from nerschat.workflows.embed import EmbedOptions
from nerschat.workflows.tasks import BatchTask, JudgeTask

SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("best-of", {"both_orders": True, "shuffle": True, "seed": 3, "temperature": 0.5,
                 "extra_body": {"top_k": 5}}),
    ("pairwise", {"both_orders": False, "field_map": {"answer_a": "left", "answer_b": "right"},
                  "temperature": 0.25, "extra_body": {"seed": 7}}),
    ("score", {"scale": "0-4", "reference": True, "field_map": {"question": "prompt"}}),
    ("score", {"scale": (1, 10)}),
    ("score", {"scale": [-2, 2]}),
    ("classify", {"labels": "safe=harmless;unsafe=harmful;unsure", "group_field": "team"}),
]
IDS = [f"{mode}-{i}" for i, (mode, _) in enumerate(SETTINGS)]


def json_form(value: Any) -> Any:
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("mode,options", SETTINGS, ids=IDS)
def test_each_mode_config_round_trips_through_json(mode: str, options: dict[str, Any]) -> None:
    task = make_task(mode, model="m", **options)
    config = task_config(task)
    assert json_form(config) == config  # what is fingerprinted is already its JSON form
    # the task a Parsl worker rebuilds from JSON fingerprints the same configuration
    rebuilt = task_from_dict(json_form(task.to_dict()))
    assert task_config(rebuilt) == config


@pytest.mark.parametrize("mode,options", SETTINGS, ids=IDS)
def test_stored_config_of_each_mode_lets_the_same_run_resume(tmp_path: Path, mode: str,
                                                             options: dict[str, Any]) -> None:
    task = make_task(mode, model="m", **options)
    (tmp_path / "config.json").write_text(json.dumps(task_config(task)))
    check_config(tmp_path, tmp_path / "out.jsonl", task_config(task))  # no ConfigChanged
    check_config(tmp_path, tmp_path / "out.jsonl",
                 task_config(make_task(mode, model="m", **options)))
    changed = make_task(mode, model="m", **{**options, "temperature": 0.9})
    with pytest.raises(ConfigChanged, match="temperature"):
        check_config(tmp_path, tmp_path / "out.jsonl", task_config(changed))


def test_check_config_compares_json_forms_for_every_task(tmp_path: Path) -> None:
    """The comparison itself is in JSON form: tuples, nested tuples, int dict keys."""
    config = {"task": "x", "pair": (1, 2), "nested": {"a": [(1, 2)], 3: "three"},
              "temperature": 0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    check_config(tmp_path, tmp_path / "out", config)
    check_config(tmp_path, tmp_path / "out", {**config, "temperature": 0.0})  # 0 == 0.0
    with pytest.raises(ConfigChanged, match=r"pair \[1, 2\] -> \[1, 3\]"):
        check_config(tmp_path, tmp_path / "out", {**config, "pair": (1, 3)})
    for other in (JudgeTask(), BatchTask()):
        (tmp_path / "config.json").write_text(json.dumps(task_config(other)))
        check_config(tmp_path, tmp_path / "out", task_config(other))
    embed = EmbedOptions(model="e", prefix="query: ")
    (tmp_path / "config.json").write_text(json.dumps(embed.config()))
    check_config(tmp_path, tmp_path / "out", embed.config())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -0.5, "0.3",
                                   True])
@pytest.mark.parametrize("mode", ["best-of", "pairwise", "score", "classify"])
def test_temperature_must_be_a_finite_number_at_least_zero(mode: str, value: Any) -> None:
    with pytest.raises(JudgingConfigError, match="temperature"):
        make_task(mode, temperature=value)


def test_score_scale_bounded_and_integer() -> None:
    assert make_task("score", scale="0-100").labels[-1] == "100"  # type: ignore[union-attr]
    with pytest.raises(JudgingConfigError, match=r"1-1000000.*1000000 points.*at most 101"):
        make_task("score", scale="1-1000000")
    with pytest.raises(JudgingConfigError, match=r"scale.*at most 101"):
        make_task("score", scale=(0, 101))
    with pytest.raises(JudgingConfigError, match="scale"):
        make_task("score", scale=(1.5, 4))
    with pytest.raises(JudgingConfigError, match="scale"):
        make_task("score", scale=[1, 2, 3])
    with pytest.raises(JudgingConfigError, match="scale"):
        make_task("score", scale=("a", "b"))


@pytest.mark.parametrize("mode,record,verdicts", [
    ("best-of", {"answers": ["x", "y"]}, ("answer", "index")),
    ("pairwise", {"answer_a": "x", "answer_b": "y"}, ("winner",)),
    ("score", {"answer": "x"}, ("score", "expected_score")),
    ("classify", {"answer": "x"}, ("label", "probability"))])
def test_failed_item_line_names_its_mode(mode: str, record: dict[str, Any],
                                         verdicts: tuple[str, ...]) -> None:
    """A line for an item whose handling raised keeps the mode: the summary is that mode's."""
    from nerschat.judging.report import summarize, summary_table
    from nerschat.workflows.core import error_result

    task = make_task(mode, model="m")
    item = task.parse({"id": "i1", "question": "q", **record})  # type: ignore[union-attr]
    line = error_result(task, item, "ValueError: boom")
    assert line["id"] == "i1" and line["mode"] == mode and line["error"] == "ValueError: boom"
    assert all(line[name] is None for name in verdicts)
    summary = summarize([json_form(line)])
    assert summary["mode"] == mode and summary["errors"] == 1
    assert summary_table(summary).title.plain == f"judge summary ({mode})"  # type: ignore[union-attr]


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            argv: list[str]) -> tuple[object, str]:
    """`nerschat ARGV` through its entry point: (exit status, stderr)."""
    import sys

    from nerschat.cli.main import main

    monkeypatch.setattr(sys, "argv", ["nerschat", *argv])
    with pytest.raises(SystemExit) as caught:
        main()
    return caught.value.code, capsys.readouterr().err.replace("\n", "")


@pytest.mark.parametrize("argv,message", [
    (["--temperature", "nan"], "nan is not a number"),
    (["--temperature", "inf"], "inf is not a finite number"),
    (["--temperature", "-1"], "temperature -1.0: must be a finite number >= 0"),
    (["--mode", "score", "--scale", "1-1000000"], "--scale '1-1000000': 1000000 points; at most"),
    (["--mode", "score", "--scale", "-50-51"], "102 points; at most 101"),
])
def test_bad_judging_options_are_usage_errors_before_anything_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], message: str) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "1", "question": "q", "answer": "a", "answers": ["a"]}\n')
    status, err = run_cli(monkeypatch, capsys, [
        "judge", str(source), "-o", str(tmp_path / "o.jsonl"),
        "--registry", str(tmp_path / "none"), "--timeout", "1", *argv])
    assert status == 2, err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "none").exists()


def test_template_with_a_format_spec_is_a_usage_error_naming_file_and_field(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "1", "question": "q", "answer": "a"}\n')
    template = tmp_path / "t.txt"
    template.write_text("{question:>99999999999} {answer}")
    status, err = run_cli(monkeypatch, capsys, [
        "judge", str(source), "-o", str(tmp_path / "o.jsonl"), "--mode", "score",
        "--template", str(template), "--registry", str(tmp_path / "none"), "--timeout", "1"])
    assert status == 2, err
    assert err.startswith(f"error: {template}: not a valid template (field "
                          "{question:>99999999999}: only plain {name} fields")
