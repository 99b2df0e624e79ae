"""Reading JSONL inputs with errors that say file, line and field."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from nerschat.errors import UsageError

T = TypeVar("T")


class InputError(UsageError, ValueError):
    """One bad input record: `FILE:LINE: field 'x': what is wrong`."""

    def __init__(self, path: str | Path, line: int, field: str | None, message: str):
        self.path, self.line, self.field, self.reason = str(path), line, field, message
        where = f"{path}:{line}" if line else str(path)  # line 0: about the whole file
        super().__init__(f"{where}: field {field!r}: {message}" if field else f"{where}: {message}")


class FieldError(ValueError):
    """Raised by a record parser; turned into an InputError with the file and line."""

    def __init__(self, field: str | None, message: str):
        super().__init__(message)
        self.field = field


@dataclass
class Invalid:
    line: int
    error: str
    raw: str


@dataclass
class Parsed(Generic[T]):
    items: list[T]
    invalid: list[Invalid]
    records: list[dict[str, Any]]  # the decoded line of each item, for handing on unchanged


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, str, Any]]:
    """(line number, raw text, decoded value or InputError) for each non-blank line."""
    with open(path, "rb") as handle:
        for number, raw_bytes in enumerate(handle, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield number, raw_bytes.decode("utf-8", "replace"), InputError(
                    path, number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})")
                continue
            if not raw.strip():
                continue
            try:
                yield number, raw, json.loads(raw)
            except json.JSONDecodeError as exc:
                yield number, raw, InputError(path, number, None,
                                              f"malformed JSON: {exc.msg} (column {exc.colno})")


def read_records(path: str | Path, parse: Callable[[Any], T], id_of: Callable[[T], str], *,
                 skip_invalid: bool = False) -> Parsed[T]:
    """Parse every line; raise the first InputError unless `skip_invalid` collects them."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, 0, None, "input file not found")
    items: list[T] = []
    records: list[dict[str, Any]] = []
    invalid: list[Invalid] = []
    first_line: dict[str, int] = {}
    for number, raw, value in iter_json_lines(path):
        try:
            if isinstance(value, InputError):
                raise value
            if not isinstance(value, dict):
                raise InputError(path, number, None, "a line must be a JSON object")
            try:
                item = parse(value)
            except FieldError as exc:
                raise InputError(path, number, exc.field, str(exc)) from None
            item_id = id_of(item)
            if item_id in first_line:
                raise InputError(path, number, "id",
                                 f"duplicate id {item_id!r} (first on line {first_line[item_id]})")
            first_line[item_id] = number
            items.append(item)
            records.append(value)
        except InputError as exc:
            if not skip_invalid:
                raise
            invalid.append(Invalid(number, str(exc), raw.rstrip("\n")))
    return Parsed(items, invalid, records)


def require_str(record: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    if name not in record:
        raise FieldError(name, "missing")
    value = record[name]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and name in ("id", "custom_id"):
        return str(value)  # numeric ids are common in exported data sets
    if not isinstance(value, str):
        raise FieldError(name, f"must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise FieldError(name, "is empty")
    return value


def write_invalid(path: Path, invalid: list[Invalid]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for bad in invalid:
            handle.write(json.dumps({"line": bad.line, "error": bad.error, "raw": bad.raw}) + "\n")
