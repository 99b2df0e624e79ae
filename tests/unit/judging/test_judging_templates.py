from __future__ import annotations

from pathlib import Path

import pytest

from nerschat.judging.templates import (
    MODES,
    TemplateError,
    default_template,
    item_fields,
    load_template,
    template_fields,
)
from nerschat.workflows.inputs import FieldError
from nerschat.workflows.judge import DEFAULT_TEMPLATE


def test_shipped_templates_and_best_of_is_todays() -> None:
    assert default_template("best-of").strip() == DEFAULT_TEMPLATE.strip()
    for mode in MODES:
        plain = template_fields(default_template(mode))
        guided = template_fields(default_template(mode, reference=True))
        assert "question" in plain
        if mode != "best-of":
            assert "reference" in guided and "reference" not in plain


def test_item_fields_names_the_missing_field_and_bad_types() -> None:
    template = "{question} {context} {answer_a}"
    assert item_fields({"question": "q", "ctx": 3}, template, provided=["answer_a"],
                       field_map={"context": "ctx"}) == {"question": "q", "context": "3"}
    with pytest.raises(FieldError) as caught:
        item_fields({"question": "q"}, template, provided=["answer_a"])
    assert caught.value.field == "context"
    with pytest.raises(FieldError, match="must be a string, got list"):
        item_fields({"question": ["q"], "context": "c"}, template, provided=["answer_a"])


def test_user_template_file_checked(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("Q: {question}\nliteral {{braces}}\n")
    assert load_template(good).startswith("Q:")
    bad = tmp_path / "bad.txt"
    bad.write_text("Q: {question\n")
    with pytest.raises(TemplateError, match="bad.txt: not a valid template"):
        load_template(bad)
    positional = tmp_path / "pos.txt"
    positional.write_text("Q: {}\n")
    with pytest.raises(TemplateError, match="positional"):
        load_template(positional)
    with pytest.raises(TemplateError, match="cannot read"):
        load_template(tmp_path / "missing.txt")


@pytest.mark.parametrize("field", ["{question:>99999999999}", "{question!r}", "{question.x}",
                                   "{question[0]}", "{question:{answer}}", "{question:d}"])
def test_template_fields_must_be_plain_names(tmp_path: Path, field: str) -> None:
    """A format spec could exhaust memory per item (MemoryError); refused when read, by name."""
    path = tmp_path / "t.txt"
    path.write_text(f"Q: {field}\nA: {{answer}}\n")
    with pytest.raises(TemplateError) as caught:
        load_template(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a valid template (field {field[:20]}")
    assert "\n" not in message and "plain {name}" in message


@pytest.mark.parametrize("mode", MODES)
def test_api_templates_checked_before_anything_is_sent(mode: str) -> None:
    from nerschat.judging import make_task

    extra = {"best-of": "{candidates}", "pairwise": "{answer_a}{answer_b}"}.get(mode, "")
    with pytest.raises(TemplateError, match=r"template: not a valid template \(field "
                                            r"\{question:>99999999999\}"):
        make_task(mode, template="{question:>99999999999}" + extra)
