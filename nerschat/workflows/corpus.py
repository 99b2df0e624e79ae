"""Reading a corpus to embed: JSONL (`id`, `text`), a directory of text files, or Parquet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nerschat.workflows.inputs import FieldError, InputError, Invalid, read_records, require_str

TEXT_SUFFIXES = {".txt", ".md", ".text", ".rst"}


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    invalid: list[Invalid]

    def __len__(self) -> int:
        return len(self.ids)


class _Collector:
    """Adds documents, enforcing non-empty text and unique ids, with --skip-invalid."""

    def __init__(self, skip_invalid: bool):
        self.skip_invalid = skip_invalid
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.invalid: list[Invalid] = []
        self._where: dict[str, str] = {}

    def reject(self, error: InputError, line: int, raw: str) -> None:
        if not self.skip_invalid:
            raise error
        self.invalid.append(Invalid(line, str(error), raw[:2000]))

    def add(self, doc_id: str, text: str, path: Path | str, line: int, where: str,
            raw: str) -> None:
        if doc_id in self._where:
            self.reject(InputError(path, line, "id", f"duplicate id {doc_id!r} (first at "
                                                     f"{self._where[doc_id]})"), line, raw)
            return
        if not text.strip():
            self.reject(InputError(path, line, "text", "empty text"), line, raw)
            return
        self._where[doc_id] = where
        self.ids.append(doc_id)
        self.texts.append(text)

    def corpus(self) -> Corpus:
        return Corpus(self.ids, self.texts, self.invalid)


def read_jsonl(path: Path, collector: _Collector, id_field: str, text_field: str) -> None:
    def parse(record: dict[str, Any]) -> tuple[str, str]:
        text = require_str(record, text_field, allow_empty=True)
        if not text.strip():
            raise FieldError(text_field, "empty text")
        return require_str(record, id_field), text

    parsed = read_records(path, parse, lambda doc: doc[0], skip_invalid=collector.skip_invalid)
    collector.invalid.extend(parsed.invalid)
    for number, (doc_id, text) in enumerate(parsed.items, start=1):
        collector.add(doc_id, text, path, number, f"item {number}", doc_id)


def read_directory(root: Path, collector: _Collector) -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise InputError(root, 0, None, f"no text files ({', '.join(sorted(TEXT_SUFFIXES))})")
    for path in files:
        doc_id = str(path.relative_to(root))
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            collector.reject(InputError(path, 1, None, f"not UTF-8 ({exc.reason} at byte "
                                                      f"{exc.start})"), 0, doc_id)
            continue
        collector.add(doc_id, text, path, 1, str(path), doc_id)


def read_parquet(path: Path, collector: _Collector, id_column: str, text_column: str) -> None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputError(path, 0, None, "reading Parquet needs pyarrow: "
                                        "pip install 'nerschat[parquet]'") from None
    table = pq.read_table(path)
    for column in (id_column, text_column):
        if column not in table.column_names:
            raise InputError(path, 0, column, f"no such column (columns: "
                                              f"{', '.join(table.column_names)})")
    ids = table.column(id_column).to_pylist()
    texts = table.column(text_column).to_pylist()
    for row, (doc_id, text) in enumerate(zip(ids, texts), start=1):
        raw = f"row {row}"
        if doc_id is None:
            collector.reject(InputError(path, row, id_column, "missing id"), row, raw)
        elif not isinstance(text, str):
            collector.reject(InputError(path, row, text_column, "missing text"), row, raw)
        else:
            collector.add(str(doc_id), text, path, row, f"row {row}", raw)


def read_corpus(source: str | Path, *, id_field: str = "id", text_field: str = "text",
                skip_invalid: bool = False) -> Corpus:
    """Documents from JSONL, a directory of text files, or a Parquet file."""
    path = Path(source)
    collector = _Collector(skip_invalid)
    if path.is_dir():
        read_directory(path, collector)
    elif not path.exists():
        raise InputError(path, 0, None, "input not found")
    elif path.suffix.lower() in (".parquet", ".pq"):
        read_parquet(path, collector, id_field, text_field)
    else:
        read_jsonl(path, collector, id_field, text_field)
    return collector.corpus()
