"""Reading a corpus to embed as a stream of JSON lines, whatever its format.

Formats: JSONL (an id and a text field), a directory of text files, or Parquet (an id and a
text column). Every document becomes one record `(number, JSON line, error)` for the workflow
core (`nerschat.workflows.core.task_records`): JSONL lines as they are, other documents as
`{id_field: id, text_field: text}`; the number is the line, file or row (1-based).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerschat.workflows.inputs import (
    FieldError,
    InputError,
    iter_lines,
    not_a_file,
    require_str,
)

TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst"}

Record = tuple[int, bytes, "InputError | None"]


@dataclass(frozen=True)
class Document:
    """One document to embed: its id and text."""

    id: str
    text: str


def parse_document(record: dict[str, Any], id_field: str, text_field: str) -> Document:
    """A Document from one record; FieldError for a missing, non-string or empty field."""
    doc_id = require_str(record, id_field)
    text = require_str(record, text_field, allow_empty=True)
    if not text.strip():
        raise FieldError(text_field, "empty text")
    return Document(doc_id, text)


def _line(doc_id: str, text: str, id_field: str, text_field: str) -> bytes:
    return json.dumps({id_field: doc_id, text_field: text}, ensure_ascii=False).encode("utf-8")


def _directory(root: Path, id_field: str, text_field: str) -> Iterator[Record]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise InputError(root, 0, None, f"no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
    for number, path in enumerate(files, start=1):
        doc_id = str(path.relative_to(root))
        shown = doc_id.encode("utf-8", "replace")
        try:
            doc_id.encode("utf-8")
        except UnicodeEncodeError:
            shown = doc_id.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode()
            yield number, shown, InputError(shown.decode(), 0, None,
                                            "file name is not valid UTF-8: cannot be an id; "
                                            "rename the file")
            continue
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, shown, InputError(path, 1, None, f"not UTF-8 ({exc.reason} at byte "
                                                           f"{exc.start})")
            continue
        except OSError as exc:
            yield number, shown, InputError(path, 0, None, f"cannot read ({exc.strerror})")
            continue
        if not text.strip():
            yield number, shown, InputError(path, 1, None, "empty text")
            continue
        yield number, _line(doc_id, text, id_field, text_field), None


def _parquet(path: Path, id_column: str, text_column: str) -> Iterator[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(path, 0, None, "reading Parquet needs pyarrow: "
                                        "pip install 'nerschat[parquet]'") from None
    try:
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
    except Exception as exc:  # pyarrow raises its own ArrowException kinds
        raise InputError(path, 0, None, f"not a readable Parquet file ({str(exc)[:120]})"
                         ) from None
    for column in (id_column, text_column):
        if column not in names:
            raise InputError(path, 0, column, f"no such column (columns: {', '.join(names)})")
    yield from _parquet_rows(path, handle, id_column, text_column)


def _parquet_rows(path: Path, handle: Any, id_column: str, text_column: str
                  ) -> Iterator[Record]:
    row = 0
    batches = handle.iter_batches(columns=[id_column, text_column], batch_size=8192)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a corrupt page: the input's fault, not the output's
            raise InputError(path, row + 1, None, f"not a readable Parquet file "
                                                  f"({str(exc)[:120]})") from None
        for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            row += 1
            shown = f"row {row}".encode()
            if not isinstance(doc_id, str) or not doc_id:
                yield row, shown, InputError(path, row, id_column, "must be a non-empty string, "
                                                                   f"got {type(doc_id).__name__}")
            elif not isinstance(text, str) or not text.strip():
                yield row, shown, InputError(path, row, text_column, "missing or empty text")
            else:
                yield row, _line(doc_id, text, id_column, text_column), None


def corpus_records(source: str | Path, *, id_field: str = "id", text_field: str = "text"
                   ) -> Iterator[Record]:
    """Every document of `source` in order as `(number, JSON line, error or None)`.

    Raises InputError only for the source as a whole (missing, no text files, no column).
    """
    path = Path(source)
    if path.is_dir():
        return _directory(path, id_field, text_field)
    problem = not_a_file(path)
    if problem is not None:
        raise InputError(path, 0, None, problem)
    if path.suffix.lower() in (".parquet", ".pq"):
        return _parquet(path, id_field, text_field)
    return ((number, raw, None) for number, raw in iter_lines(path))
