"""Reading a corpus to embed as a stream.

Formats: JSONL (`id`, `text`), a directory of text files, or Parquet. Each document comes with
its place (line, file or row) for error messages.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerschat.workflows.inputs import FieldError, InputError, decode_line, iter_lines, require_str

TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst"}


@dataclass(frozen=True)
class Document:
    """One document: its place in the input (1-based line, file or row number), id, text."""

    number: int
    id: str
    text: str


# (number, raw text for an errors file, Document or InputError)
Entry = tuple[int, str, "Document | InputError"]


def _jsonl(path: Path, id_field: str, text_field: str) -> Iterator[Entry]:
    for number, raw in iter_lines(path):
        value: Any = decode_line(path, number, raw)
        shown = raw[:2000].decode("utf-8", "replace")
        if isinstance(value, InputError):
            yield number, shown, value
            continue
        try:
            doc_id = require_str(value, id_field)
            text = require_str(value, text_field, allow_empty=True)
            if not text.strip():
                raise FieldError(text_field, "empty text")
        except FieldError as exc:
            yield number, shown, InputError(path, number, exc.field, str(exc))
            continue
        yield number, shown, Document(number, doc_id, text)


def _directory(root: Path) -> Iterator[Entry]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise InputError(root, 0, None, f"no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
    for number, path in enumerate(files, start=1):
        doc_id = str(path.relative_to(root))
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            yield number, doc_id, InputError(path, 1, None, f"not UTF-8 ({exc.reason} at byte "
                                                            f"{exc.start})")
            continue
        except OSError as exc:
            yield number, doc_id, InputError(path, 0, None, f"cannot read ({exc.strerror})")
            continue
        if not text.strip():
            yield number, doc_id, InputError(path, 1, None, "empty text")
            continue
        yield number, doc_id, Document(number, doc_id, text)


def _parquet(path: Path, id_column: str, text_column: str) -> Iterator[Entry]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(path, 0, None, "reading Parquet needs pyarrow: "
                                        "pip install 'nerschat[parquet]'") from None
    handle = pq.ParquetFile(path)
    names = handle.schema_arrow.names
    for column in (id_column, text_column):
        if column not in names:
            raise InputError(path, 0, column, f"no such column (columns: {', '.join(names)})")
    row = 0
    for batch in handle.iter_batches(columns=[id_column, text_column], batch_size=8192):
        for doc_id, text in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist()):
            row += 1
            raw = f"row {row}"
            if not isinstance(doc_id, str) or not doc_id:
                yield row, raw, InputError(path, row, id_column, "must be a non-empty string, "
                                                                 f"got {type(doc_id).__name__}")
            elif not isinstance(text, str) or not text.strip():
                yield row, raw, InputError(path, row, text_column, "missing or empty text")
            else:
                yield row, raw, Document(row, doc_id, text)


def iter_corpus(source: str | Path, *, id_field: str = "id", text_field: str = "text"
                ) -> Iterator[Entry]:
    """Every document of `source` in order, or the InputError of its line (not raised).

    Raises InputError only for the source as a whole (missing, no text files, no column).
    """
    path = Path(source)
    if path.is_dir():
        return _directory(path)
    if not path.exists():
        raise InputError(path, 0, None, "input not found")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _parquet(path, id_field, text_field)
    return _jsonl(path, id_field, text_field)
