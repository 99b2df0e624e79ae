r"""Reading inputs as a stream, with errors that say file, line and field.

Every bad line becomes one `InputError` (`FILE:LINE: field 'x': what is wrong`): bytes that
are not UTF-8, malformed JSON, text with lone surrogate escapes (`"\ud83d"`, which cannot be
written back as UTF-8), fields of the wrong type. Nothing is held beyond the current line.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nerschat.errors import UsageError


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


def _surrogate_path(value: Any, path: str = "") -> str | None:
    """The field path of the first string holding a lone surrogate, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path or "(value)"
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = _surrogate_path(key, f"{path}.{key}".lstrip(".")) or _surrogate_path(
                item, f"{path}.{key}".lstrip("."))
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_path(item, f"{path}[{i}]")
            if found:
                return found
    return None


def decode_line(path: str | Path, number: int, raw_bytes: bytes) -> Any:
    """The JSON value of one line, or an InputError (returned, not raised)."""
    try:
        raw = raw_bytes.decode("utf-8")
    except UnicodeDecodeError as exc:
        return InputError(path, number, None, f"not UTF-8 ({exc.reason} at byte {exc.start})")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        return InputError(path, number, None, f"malformed JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return InputError(path, number, None, "JSON nested too deeply")
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        return InputError(path, number, None, f"malformed JSON: {str(exc)[:120]}")
    if b"\\ud" in raw_bytes or b"\\uD" in raw_bytes:  # only escapes can make lone surrogates
        field = _surrogate_path(value)
        if field is not None:
            return InputError(path, number, field, "lone surrogate escape (e.g. a truncated "
                                                   "emoji): not valid Unicode text")
    if not isinstance(value, dict):
        return InputError(path, number, None, "a line must be a JSON object")
    return value


def parse_line(path: str | Path, number: int, raw: bytes,
               parse: Callable[[Any], Any]) -> tuple[Any, Any]:
    """(decoded JSON value, parsed item) of one input line.

    Raises InputError (`FILE:LINE: field 'x': ...`) for a line that is not JSON or that
    `parse` refuses with a FieldError.
    """
    value = decode_line(path, number, raw)
    if isinstance(value, InputError):
        raise value
    try:
        return value, parse(value)
    except FieldError as exc:
        raise InputError(path, number, exc.field, str(exc)) from None


def not_a_file(path: Path) -> str | None:
    """Why `path` cannot be read as an input file (twice, by name), or None if it can."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "input file not found"
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return ("is a pipe (FIFO or process substitution); the input is read twice, so "
                "write it to a file first")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file; give a JSONL file"
    if stat.S_ISDIR(mode):
        return "is a directory; give a JSONL file"
    return "is not a regular file; give a JSONL file"


def iter_lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes without the line end) of each non-blank line.

    Raises InputError if `path` is missing or not a regular file (a FIFO, a device).
    """
    path = Path(path)
    problem = not_a_file(path)
    if problem is not None:
        raise InputError(path, 0, None, problem)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            stripped = raw.rstrip(b"\r\n")
            if stripped.strip():
                yield number, stripped


def require_str(record: dict[str, Any], name: str, *, allow_empty: bool = False) -> str:
    """`record[name]` as a non-empty string, else FieldError (ids are never converted)."""
    if name not in record:
        raise FieldError(name, "missing")
    value = record[name]
    if not isinstance(value, str):
        hint = "; quote it" if isinstance(value, (int, float)) and not isinstance(value, bool) \
            else ""
        raise FieldError(name, f"must be a string, got {type(value).__name__} "
                               f"{json.dumps(value)[:40]}{hint}")
    if not allow_empty and not value.strip():
        raise FieldError(name, "is empty")
    return value


def invalid_line(number: int, error: str, raw: bytes | str) -> str:
    """One errors-file line for a rejected input line (ASCII-safe JSON)."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return json.dumps({"line": number, "error": error, "raw": text[:2000]}) + "\n"
