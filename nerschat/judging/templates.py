"""Prompt templates of the judging protocols: shipped defaults, user overrides, field checks.

A template is a Python format string (`str.format`) with named fields. Some fields are filled
by the protocol itself (`{candidates}`, `{answer_a}`, `{label_list}`, ...); every other field
comes from the input line (through an optional field-name mapping), and an item that lacks one
is rejected before anything is sent. Fields are plain `{name}`: every value is text, so a
format spec, conversion, attribute or index (`{q:>99999}`, `{q!r}`, `{q.x}`, `{q[0]}`) could
only fail, or exhaust memory, per item; it is refused when the template is read.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from nerschat.errors import UsageError
from nerschat.workflows.inputs import FieldError

MODES = ("best-of", "pairwise", "score", "classify")


class TemplateError(UsageError, ValueError):
    """A template that cannot be read or parsed: `FILE: what is wrong`."""


def default_template(mode: str, *, reference: bool = False) -> str:
    """The shipped template of `mode` (`MODES`); `reference=True`: the reference-guided one."""
    if mode not in MODES:
        raise TemplateError(f"unknown judging mode {mode!r}; choose one of {', '.join(MODES)}")
    name = f"{mode}-reference.txt" if reference and mode != "best-of" else f"{mode}.txt"
    return resources.files("nerschat.judging").joinpath("templates").joinpath(name).read_text("utf-8")


def load_template(path: str | Path) -> str:
    """A user's template file, checked to be a well-formed format string."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read the template: {exc}") from None
    check_template(text, str(path))
    return text


def check_template(template: str, source: str) -> None:
    """Raise TemplateError (`SOURCE: not a valid template (why)`) unless it is well-formed.

    Well-formed: `template_fields` reads it (named, plain fields only). `source` names the
    file or option the template came from.
    """
    try:
        template_fields(template)
    except ValueError as exc:
        raise TemplateError(f"{source}: not a valid template ({exc}); write literal braces "
                            "as {{ and }}") from None


def template_fields(template: str) -> list[str]:
    """Named fields of a format string, in order of first use.

    Raises ValueError for a malformed string, a positional field (`{}` / `{0}`), or a field
    that is not a plain `{name}` (format spec, conversion, attribute or index), naming it.
    """
    names: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        root = name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise ValueError("positional fields ({} or {0}) are not allowed; name each field")
        if spec or conversion or root != name:
            shown = "{" + name + (f"!{conversion}" if conversion else "") \
                + (f":{spec}" if spec else "") + "}"
            if len(shown) > 60:
                shown = shown[:57] + "..."
            raise ValueError(f"field {shown}: only plain {{name}} fields are allowed, without "
                             "format spec, conversion, attribute or index")
        if root not in names:
            names.append(root)
    return names


def item_fields(record: Mapping[str, Any], template: str, *, provided: Iterable[str] = (),
                field_map: Mapping[str, str] | None = None) -> dict[str, str]:
    """The values the template takes from one input line, as strings.

    `provided`: fields the protocol fills itself; `field_map`: template field -> input key.
    Raises FieldError (reported by the reader as FILE:LINE) for a missing field or a value that
    is not a string or number.
    """
    field_map = field_map or {}
    skip = set(provided)
    try:
        names = template_fields(template)
    except ValueError as exc:
        raise FieldError(None, f"prompt template cannot be filled: {exc}") from None
    values: dict[str, str] = {}
    for name in names:
        if name in skip:
            continue
        key = field_map.get(name, name)
        if key not in record:
            raise FieldError(key, "used by the prompt template but missing")
        value = record[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise FieldError(key, f"used by the prompt template; must be a string, got "
                                  f"{type(value).__name__}")
        values[name] = str(value)
    return values


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a checked template (the values of `item_fields` plus the protocol's own)."""
    return template.format(**values)
