"""One sharded, resumable, streaming run: plan → run shards → merge, for every workflow.

    OUT.parts/config.json              the task and its configuration (see `check_config`)
    OUT.parts/order.u64                the item hashes of the last run, in input order
    OUT.parts/input-RRR-SSSS.jsonl     the raw input lines given to shard SSSS of run RRR
    OUT.parts/results-RRR-SSSS.jsonl   {"h": item hash, "ok": bool, "r": result}, appended
    OUT                                 the merge: input order, each item once, atomic
    OUT.errors.jsonl                    invalid input lines, with --skip-invalid
    OUT.parts/lock                      flock'ed by the run writing OUT (pid and host inside)

An output that is the input (same st_dev/st_ino) or a symbolic link is refused, and only one
run at a time writes an output (`nerschat.workflows.outputs`).

That is the default `Sink` (JSONL results: judge, run-batch); a task may bring its own (embed
writes `.npy` shards into a directory, with its work directory inside it). A task may also
read its own input format (`read`), route each item to a model (`route_model`), and send
items in batches sized to each endpoint's limits (`packer` + `process_batch`); see
`nerschat.workflows.dispatch` for how units go out.

Memory stays bounded by the work in flight: the input is read as a stream (twice: once to
validate and hash each line, once to copy the lines still to do into shard files), and each
item's hash goes straight to a file of 8-byte hashes in input order (`ItemOrder`), read back
in slices; what planning holds is 8 bytes per item (the id hashes that find duplicate
ids), then 8 bytes per item already done. The merge finds each item's result again by an
external hash join (`Placement`): scratch files on disk, a few MB in memory at any size.

Resume cannot return stale answers: each item is known by a hash of its input line, so an
edited line is redone, and the run's configuration (model, template, prompt, sampling) is
written to config.json; a rerun with another configuration is refused (`ConfigChanged`)
unless it starts fresh (`restart=True`, or a new output).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np
from rich.console import Console
from rich.markup import escape

from nerschat.errors import UsageError
from nerschat.registry import Endpoint, Registry
from nerschat.workflows.atomic import OutputError, atomic_write, write_json
from nerschat.workflows.dispatch import Packer, Unit, dispatch
from nerschat.workflows.inputs import (
    InputError,
    decode_line,
    invalid_line,
    iter_lines,
    parse_line,
)
from nerschat.workflows.outputs import check_file_output, clear_workdir, output_lock
from nerschat.workflows.tasks import Clients, ItemTask, task_from_dict

RESULT_PREFIX = "results-"
MAX_IN_FLIGHT_BYTES = 8 << 20  # input bytes of the items in flight in one process
DEFAULT_SHARDS_PARSL = 4


class ConfigChanged(UsageError):
    """The output holds results of another configuration."""


class NoItems(UsageError, ValueError):
    """The input holds no valid item (empty, or every line invalid): exit 2, every workflow."""


class AmbiguousModel(UsageError, ValueError):
    """Several models are served and the task needs exactly one."""


def item_hash(raw: bytes) -> int:
    """64-bit content hash of one input line (its id is part of the line)."""
    return int.from_bytes(hashlib.blake2b(raw.strip(), digest_size=8).digest(), "little")


def _id_hash(item_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(item_id.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


class Sink:
    """Where a run's work and output go: JSONL results merged into one JSONL file."""

    def workdir(self, output: Path) -> Path:
        """The work directory of `output` (`OUT.parts/`)."""
        return output.with_name(output.name + ".parts")

    def errors_path(self, output: Path) -> Path:
        """Where invalid input lines of `output`'s run go (`OUT.errors.jsonl`)."""
        return output.with_name(output.stem + ".errors.jsonl")

    def check_output(self, input_path: Path, output: Path) -> None:
        """OutputRefused if `output` is the input, or a symlink (see `outputs`)."""
        check_file_output(input_path, output, [self.errors_path(output), self.workdir(output)])

    def restart(self, output: Path) -> None:
        """Forget earlier results of `output` (its work directory, merge and errors file)."""
        clear_workdir(self.workdir(output))
        for path in (output, self.errors_path(output)):
            path.unlink(missing_ok=True)

    def work_shards(self, total: int, requested: int | None) -> int:
        """How many shards to plan for `total` valid items when `requested` (None: default)."""
        return requested or 1

    def prepare(self, shards: list[tuple[Path, Path]], fresh: bool, output: Path,
                config: dict[str, Any]) -> None:
        """Called before shards run in this process; `fresh`: every item is to do."""

    def shard_finished(self, shard_in: Path, results: Path) -> None:
        """Called (in a thread) when every item of a shard run in this process has a result."""

    def merge(self, workdir: Path, order: Order, output: Path,
              config: dict[str, Any]) -> dict[str, int]:
        """Write the result of each item hash in `order` to `output`, in that order, atomically.

        Results are those in `workdir`. Returns counts: written, errors, missing. `config` is
        the run's configuration.
        """
        return merge_results(workdir, order, output)


JSONL = Sink()


def task_sink(task: ItemTask) -> Sink:
    """The task's own sink, else JSONL results."""
    sink = getattr(task, "sink", None)
    return sink if isinstance(sink, Sink) else JSONL


def parts_dir(output: Path) -> Path:
    """The work directory of a JSONL `output` (`OUT.parts/`)."""
    return JSONL.workdir(output)


def errors_path(output: Path) -> Path:
    """Where invalid input lines of a JSONL `output`'s run go (`OUT.errors.jsonl`)."""
    return JSONL.errors_path(output)


InputRecord = tuple[int, bytes, "InputError | None"]


def task_records(task: ItemTask, path: Path) -> Iterator[InputRecord]:
    """(number, raw line, error) of each input record: the task's own reader, else JSONL lines.

    A reader turns other formats into JSON lines and reports what it cannot read as an
    InputError; JSON lines are parsed by `task.parse`.
    """
    read = getattr(task, "read", None)
    if callable(read):
        return iter(read(path))
    return ((number, raw, None) for number, raw in iter_lines(path))


# -- what the core asks of a task (tasks written for the first protocol also work) -------

def task_model(task: ItemTask) -> str | None:
    """The model bound to `task` (None: not resolved yet, or each request names its own)."""
    model = getattr(task, "model", None)
    if model is None:
        model = getattr(getattr(task, "options", None), "model", None)
    return model if isinstance(model, str) else None


def task_config(task: ItemTask) -> dict[str, Any]:
    """What the task's results depend on besides the items (fingerprinted)."""
    config = getattr(task, "config", None)
    if callable(config):
        return dict(config())
    spec = task.to_dict()
    raw = spec.get("options")
    options = raw if isinstance(raw, dict) else {}
    return {"task": spec.get("task"), **{k: v for k, v in options.items() if k != "attempts"}}


def error_result(task: ItemTask, item: Any, message: str) -> dict[str, Any]:
    """The output line of an item whose handling failed with `message`."""
    make = getattr(task, "error_result", None)
    if callable(make):
        return dict(make(item, message))
    return {task.key: task.item_id(item), "error": message}


def rebuild_task(spec: dict[str, Any]) -> ItemTask:
    """A task from its `to_dict()` on a Parsl worker (workflow tasks, then judging modes)."""
    try:
        return task_from_dict(spec)
    except ValueError:
        from nerschat.judging import task_from_dict as judging_task

        return judging_task(spec)


# -- configuration fingerprint ----------------------------------------------------------

def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def check_config(workdir: Path, output: Path, config: dict[str, Any]) -> None:
    """Refuse (ConfigChanged) if `workdir` was made with another configuration.

    A key whose new value is None ("not given", e.g. the model before it is resolved) is
    not compared.
    """
    path = workdir / "config.json"
    if not path.exists():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    changed = [f"{key} {_short(stored.get(key))} -> {_short(value)}"
               for key, value in sorted(config.items())
               if value is not None  # compared in its JSON form: a tuple equals its list
               and stored.get(key) != json.loads(json.dumps(value))]
    changed += [f"{key} {_short(value)} -> (none)" for key, value in sorted(stored.items())
                if key not in config]
    if changed:
        raise ConfigChanged(f"{output} holds results of another configuration "
                            f"({'; '.join(changed)}): pass --restart to discard them, or "
                            "write to a new output")


def stored_config(workdir: Path) -> dict[str, Any]:
    """The configuration an earlier run kept in `workdir` ({} if none)."""
    try:
        value = json.loads((workdir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def restart(output: Path, task: ItemTask | None = None) -> None:
    """Forget earlier results of `output` (of `task`'s sink; default JSONL)."""
    (task_sink(task) if task is not None else JSONL).restart(output)


# -- results files ----------------------------------------------------------------------

def result_line(h: int, ok: bool, result: dict[str, Any]) -> bytes:
    """One results-file line; text that is not valid Unicode is escaped, never fatal."""
    try:
        body = json.dumps(result, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(result).encode("ascii")
    return b'{"h":"%016x","ok":%s,"r":' % (h, b"true" if ok else b"false") + body + b"}\n"


def _parse_prefix(line: bytes) -> tuple[int, bool] | None:
    if not line.startswith(b'{"h":"') or not line.endswith(b"}\n"):
        return None  # a torn last line of a killed writer
    try:
        return int(line[6:22], 16), line[29:33] == b"true"
    except ValueError:
        return None


def _result_body(line: bytes) -> bytes:
    start = line.index(b',"r":', 22) + 5
    return line[start:-2]


def done_hashes(*paths: Path) -> np.ndarray:
    """Sorted hashes (uint64, 8 bytes each) of the items results files finished successfully.

    A shard can hold the whole input (one shard by default), so not a set of Python ints.
    """
    done = array.array("Q")
    for path in paths:
        if not path.exists():
            continue
        with open(path, "rb") as handle:
            for line in handle:
                parsed = _parse_prefix(line)
                if parsed is not None and parsed[1]:
                    done.append(parsed[0])
    hashes = np.frombuffer(done, dtype=np.uint64)  # shares the array's memory
    hashes.sort()
    return hashes


def among(sorted_hashes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `hashes` occur in the sorted array `sorted_hashes`."""
    if not len(sorted_hashes):
        return np.zeros(len(hashes), dtype=bool)
    pos = np.searchsorted(sorted_hashes, hashes).clip(0, len(sorted_hashes) - 1)
    return sorted_hashes[pos] == hashes


def result_files(workdir: Path) -> list[Path]:
    """The results files of `workdir`, in name order (none if it does not exist)."""
    return sorted(workdir.glob(f"{RESULT_PREFIX}*.jsonl")) if workdir.is_dir() else []


OK_BIT = np.uint64(1 << 63)
FILE_SHIFT = 40  # a result's place: ok << 63 | file number << 40 | byte offset
MISSING = np.uint64((1 << 63) - 1)
"""The place of an item without a result (not ok, no real file number and offset)."""
BUCKET_RECORDS = 1 << 16
"""Result records a placement indexes at once (16 bytes each, about 1 MB); more are placed
in several passes, one per range of hashes."""
CHUNK = 1 << 16
"""Items (8 bytes each) read, placed or written per step."""


def _index_blocks(path: Path, number: int, block: int = CHUNK
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(hashes, places) of a results file's complete lines, in compact blocks.

    A place packs the ok flag, the file number and the offset into one uint64, ordered so
    that the larger place is the better result: a success over an error, else the latest.
    """
    h = array.array("Q")
    place = array.array("Q")
    base = number << FILE_SHIFT
    position = 0
    with open(path, "rb") as handle:
        for line in handle:
            parsed = _parse_prefix(line)
            if parsed is not None:
                h.append(parsed[0])
                place.append(base | position | (1 << 63 if parsed[1] else 0))
                if len(h) >= block:
                    yield (np.frombuffer(h, dtype=np.uint64).copy(),
                           np.frombuffer(place, dtype=np.uint64).copy())
                    h, place = array.array("Q"), array.array("Q")
            position += len(line)
    yield np.frombuffer(h, dtype=np.uint64).copy(), np.frombuffer(place, dtype=np.uint64).copy()


def _read_u64(fd: int, start: int, count: int) -> np.ndarray:
    """`count` uint64 values at item `start` of the open file `fd` (a writable copy)."""
    data = bytearray(os.pread(fd, 8 * count, 8 * start))
    return np.frombuffer(data, dtype=np.uint64)


def _best(hashes: np.ndarray, places: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct `hashes` and the largest of each one's `places`."""
    by = np.lexsort((places, hashes))
    hashes, places = hashes[by], places[by]
    last = np.ones(len(hashes), dtype=bool)
    np.not_equal(hashes[1:], hashes[:-1], out=last[:-1])
    return hashes[last], places[last]


class Placement:
    """Where each item's best result is, in input order, in memory that does not grow.

    The best result is a success over an error, else the latest. Built as an external hash
    join: every result's (hash, place) is spilled to a scratch file (16 bytes per result
    line), then joined to the order one range of hashes at a time
    (`BUCKET_RECORDS` records in memory per pass) into a scratch file of places in input
    order (8 bytes per item), read back by slices. Both scratch files are unnamed files in
    `scratch` (the work directory; the system's temporary directory if it does not exist),
    gone when the placement is closed or the process dies. Use as a context manager.
    """

    def __init__(self, files: list[Path], order: Order, scratch: Path):
        self.files = files
        self.count = len(order)
        where = scratch if scratch.is_dir() else None  # None: the system's temporary directory
        self._places = tempfile.TemporaryFile(dir=where)  # noqa: SIM115 - closed by close()
        try:
            with tempfile.TemporaryFile(dir=where) as spill:
                records = self._spill(spill)
                self._join(spill.fileno(), records, order)
        except BaseException:
            self._places.close()
            raise

    def _spill(self, spill: IO[bytes]) -> int:
        """Write (hash, place) of every complete result line; the number written."""
        records = 0
        for number, path in enumerate(self.files):
            for hashes, places in _index_blocks(path, number):
                pairs = np.empty((len(hashes), 2), dtype=np.uint64)
                pairs[:, 0], pairs[:, 1] = hashes, places
                spill.write(pairs.data)
                records += len(hashes)
        spill.flush()
        return records

    def _join(self, spill: int, records: int, order: Order) -> None:
        fd = self._places.fileno()
        for start in range(0, self.count, CHUNK):
            n = min(CHUNK, self.count - start)
            os.pwrite(fd, np.full(n, MISSING, dtype=np.uint64).data, 8 * start)
        if not records:
            return
        bits = max(0, math.ceil(math.log2(max(1, records) / BUCKET_RECORDS)))
        shift = np.uint64(64 - bits) if bits else None

        def bucket(hashes: np.ndarray) -> np.ndarray:
            if shift is None:
                return np.zeros(len(hashes), dtype=np.uint64)
            return hashes >> shift

        for b in range(1 << bits):
            hs, ps = [], []
            for start in range(0, records, CHUNK):
                pairs = _read_u64(spill, 2 * start, 2 * min(CHUNK, records - start))
                pairs = pairs.reshape(-1, 2)
                mine = bucket(pairs[:, 0]) == b
                hs.append(pairs[mine, 0])
                ps.append(pairs[mine, 1])
            hashes, places = _best(np.concatenate(hs), np.concatenate(ps))
            del hs, ps
            if not len(hashes):
                continue
            for start in range(0, self.count, CHUNK):
                part = order[start:start + CHUNK]
                mine = np.flatnonzero(bucket(part) == b)
                pos = np.searchsorted(hashes, part[mine]).clip(0, len(hashes) - 1)
                hit = hashes[pos] == part[mine]
                if not hit.any():
                    continue
                placed = _read_u64(fd, start, len(part))
                placed[mine[hit]] = places[pos[hit]]
                os.pwrite(fd, placed.data, 8 * start)

    def __enter__(self) -> Placement:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the scratch file."""
        self._places.close()

    def places(self, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
        """The places (uint64; MISSING: no result) of items start..stop, in chunks."""
        stop = self.count if stop is None else min(stop, self.count)
        for first in range(start, stop, CHUNK):
            yield _read_u64(self._places.fileno(), first, min(CHUNK, stop - first))

    def all_ok(self, start: int = 0, stop: int | None = None) -> bool:
        """Whether every item start..stop has a successful result."""
        return all(bool(((p & OK_BIT) != 0).all()) for p in self.places(start, stop))

    def first_ok(self) -> bytes | None:
        """The result JSON of the first item (in order) with a successful result."""
        for places in self.places():
            ok = np.flatnonzero((places & OK_BIT) != 0)
            if len(ok):
                found = next(self._bodies(places[ok[:1]]))
                return None if found is None else found[0]
        return None

    def bodies(self, start: int = 0, stop: int | None = None
               ) -> Iterator[tuple[bytes, bool] | None]:
        """(result JSON, ok) of each item start..stop, in order (None: no result)."""
        for places in self.places(start, stop):
            yield from self._bodies(places)

    def _bodies(self, places: np.ndarray) -> Iterator[tuple[bytes, bool] | None]:
        handles: dict[int, IO[bytes]] = {}
        mask = (1 << FILE_SHIFT) - 1
        missing = int(MISSING)
        try:
            for place in places.tolist():
                if place == missing:
                    yield None
                    continue
                number = (place >> FILE_SHIFT) & 0x7FFFFF
                handle = handles.get(number)
                if handle is None:
                    handle = handles[number] = open(self.files[number], "rb")  # noqa: SIM115
                handle.seek(place & mask)
                yield _result_body(handle.readline()), bool(place >> 63)
        finally:
            for handle in handles.values():
                handle.close()

    def merge(self, output: Path) -> dict[str, int]:
        """Write each item's result (input order) to `output`, atomically; the counts."""
        counts = {"written": 0, "errors": 0, "missing": 0}
        with atomic_write(output, "wb") as out:
            for found in self.bodies():
                if found is None:
                    counts["missing"] += 1
                    continue
                out.write(found[0] + b"\n")
                counts["written"] += 1
                counts["errors"] += not found[1]
        return counts


def merge_results(workdir: Path, order: Order, output: Path) -> dict[str, int]:
    """Write each hash's best result from `workdir` to `output`, in `order`, atomically.

    Returns counts: written, errors, missing.
    """
    with Placement(result_files(workdir), order, workdir) as placement:
        return placement.merge(output)


# -- plan -------------------------------------------------------------------------------

class ItemOrder:
    """A run's item hashes (uint64) in input order, kept in a file rather than in memory.

    8 bytes per item on disk; `order[a:b]` reads that slice back (a uint64 array), so a merge
    holds one slice at a time. Written by `plan` while it validates the input, atomically
    (rewritten once if it drops repeated ids); read-only after.
    """

    NAME = "order.u64"

    def __init__(self, path: Path, count: int):
        self.path, self.count = path, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, part: slice) -> np.ndarray:
        start, stop, step = part.indices(self.count)
        if step != 1:
            raise ValueError("ItemOrder reads contiguous slices only")
        if stop <= start:
            return np.empty(0, dtype=np.uint64)
        return np.fromfile(self.path, dtype=np.uint64, count=stop - start, offset=8 * start)

    def read(self) -> np.ndarray:
        """Every hash, in input order (8 bytes per item in memory)."""
        return self[:]


Order = np.ndarray | ItemOrder
"""Item hashes in input order: in memory, or an `ItemOrder` file read by slices."""


@dataclass
class Plan:
    """What a run must do: hashes of every valid item in input order, and the shard files."""

    order: Order  # uint64 item hashes, input order
    todo: int
    invalid: int
    shards: list[tuple[Path, Path]] = field(default_factory=list)


def _scan(task: ItemTask, path: Path, skip_invalid: bool, errors_out: IO[str] | None,
          order_out: IO[bytes]) -> tuple[np.ndarray, array.array[int], int]:
    """Pass 1: validate every line; each valid item's hash goes to `order_out` (uint64).

    Returns (id hashes of the valid items, line numbers of the invalid ones, valid count):
    8 bytes per valid item and 4 per invalid one in memory, so it hardly follows the input.
    """
    ids = array.array("Q")
    invalid = array.array("I")
    block = array.array("Q")
    for number, raw, error in task_records(task, path):
        try:
            if error is not None:
                raise error
            _, item = parse_line(path, number, raw, task.parse)
        except InputError as exc:
            if not skip_invalid:
                raise
            invalid.append(number)
            if errors_out is not None:
                errors_out.write(invalid_line(number, str(exc), raw))
            continue
        block.append(item_hash(raw))
        ids.append(_id_hash(task.item_id(item)))
        if len(block) >= CHUNK:
            order_out.write(block)
            del block[:]
    order_out.write(block)
    return np.frombuffer(ids, dtype=np.uint64), invalid, len(ids)


def repeated(values: np.ndarray) -> set[int]:
    """The values occurring more than once; sorts `values` in place (no copy)."""
    values.sort()
    same = values[1:] == values[:-1]
    return set(values[1:][same].tolist())


def _valid_lines(task: ItemTask, path: Path, skipped: np.ndarray
                 ) -> Iterator[tuple[int, bytes]]:
    """(line number, raw) of the records whose numbers are not in the sorted `skipped`."""
    i = 0
    for number, raw, _ in task_records(task, path):
        while i < len(skipped) and skipped[i] < number:
            i += 1
        if i < len(skipped) and skipped[i] == number:
            continue
        yield number, raw


def _drop(order: ItemOrder, positions: np.ndarray) -> ItemOrder:
    """`order` rewritten without the items at the sorted `positions`."""
    with atomic_write(order.path, "wb") as out:
        for start in range(0, len(order), CHUNK):
            part = order[start:start + CHUNK]
            mine = positions[(positions >= start) & (positions < start + len(part))]
            out.write(np.delete(part, mine - start).data)
    return ItemOrder(order.path, len(order) - len(positions))


def _done_in(order: Order, done: np.ndarray) -> int:
    """How many items of `order` are among the sorted hashes `done` (one slice at a time)."""
    return sum(int(among(done, order[start:start + CHUNK]).sum())
               for start in range(0, len(order), CHUNK)) if len(done) else 0


def plan(task: ItemTask, input_path: Path, output: Path, *, shards: int | None,
         skip_invalid: bool, run: int) -> Plan:
    """Validate the whole input, then write the items not yet done into shard files.

    `shards` is how many shard files (None: the sink's default for the number of items).
    Item hashes go to the order file as the input is read; done items (those with a
    successful result in the work directory's results files) are read after the input.
    In memory: 8 bytes per valid item while validating (id hashes, to find duplicate ids),
    then 8 bytes per done item while writing shard files.
    """
    sink = task_sink(task)
    workdir = sink.workdir(output)
    errors_file = sink.errors_path(output)
    with contextlib.ExitStack() as stack:
        errors_out = stack.enter_context(atomic_write(errors_file)) if skip_invalid else None
        order_out = stack.enter_context(atomic_write(workdir / ItemOrder.NAME, "wb"))
        id_hashes, invalid_lines, valid = _scan(task, input_path, skip_invalid, errors_out,
                                                order_out)
        repeats = repeated(id_hashes)  # candidates; the ids themselves decide below
        del id_hashes
        skipped = np.frombuffer(invalid_lines, dtype=np.uint32)
        bad: list[tuple[int, int]] = []  # (position in the order, line number)
        if repeats:
            first_seen: dict[str, int] = {}
            for position, (number, raw) in enumerate(_valid_lines(task, input_path, skipped)):
                item_id = task.item_id(task.parse(decode_line(input_path, number, raw)))
                if _id_hash(item_id) not in repeats:
                    continue
                if item_id not in first_seen:
                    first_seen[item_id] = number
                    continue
                error = InputError(input_path, number, task.key, f"duplicate id {item_id!r} "
                                   f"(first on line {first_seen[item_id]})")
                if not skip_invalid:
                    raise error
                bad.append((position, number))
                assert errors_out is not None
                errors_out.write(invalid_line(number, str(error), raw))
    invalid = len(skipped) + len(bad)
    if not invalid and errors_file.exists():
        errors_file.unlink()
    written = ItemOrder(workdir / ItemOrder.NAME, valid)
    if bad:
        written = _drop(written, np.array([p for p, _ in bad], dtype=np.int64))
        skipped = np.union1d(skipped, np.array([n for _, n in bad], dtype=np.uint32))
    order: Order = written
    if not len(written):
        written.path.unlink(missing_ok=True)
        order = np.empty(0, dtype=np.uint64)
    done = done_hashes(*result_files(workdir))
    result = Plan(order=order, todo=len(order) - _done_in(order, done), invalid=invalid)
    if not result.todo:
        return result
    count = max(1, min(sink.work_shards(len(order), shards), result.todo))
    bounds = np.linspace(0, result.todo, count + 1).astype(np.int64)
    source = (raw for _, raw in _valid_lines(task, input_path, skipped)
              if not len(done) or not _contains(done, item_hash(raw)))
    for number in range(count):
        stem = f"{run:03d}-{number:04d}"
        shard_in = workdir / f"input-{stem}.jsonl"
        with atomic_write(shard_in, "wb") as handle:
            for _ in range(int(bounds[number + 1] - bounds[number])):
                handle.write(next(source) + b"\n")
        result.shards.append((shard_in, workdir / f"{RESULT_PREFIX}{stem}.jsonl"))
    return result


def _contains(sorted_hashes: np.ndarray, h: int) -> bool:
    """Whether the hash `h` is in the sorted uint64 array `sorted_hashes`."""
    pos = int(np.searchsorted(sorted_hashes, np.uint64(h)))
    return pos < len(sorted_hashes) and int(sorted_hashes[pos]) == h


def next_run(workdir: Path) -> int:
    """The number of the next run in `workdir` (shard files of earlier runs are kept)."""
    runs = [int(p.name.split("-")[1]) for p in workdir.glob("input-*.jsonl")
            if p.name.split("-")[1].isdigit()] if workdir.is_dir() else []
    return max(runs, default=-1) + 1


# -- running shards ---------------------------------------------------------------------

def _shard_items(task: ItemTask, shard_in: Path, done: np.ndarray
                 ) -> Iterator[tuple[int, int, Any]]:
    for number, raw in iter_lines(shard_in):
        h = item_hash(raw)
        if len(done) and _contains(done, h):
            continue  # a retried shard does not redo what it finished
        yield h, len(raw), task.parse(decode_line(shard_in, number, raw))


def open_results(path: Path) -> IO[bytes]:
    """`path` opened for appending, after cutting a torn last line (a killed writer's)."""
    handle = open(path, "a+b")  # noqa: SIM115
    size = handle.seek(0, os.SEEK_END)
    if size:
        tail = min(size, 1 << 20)
        while True:
            handle.seek(size - tail)
            block = handle.read(tail)
            cut = block.rfind(b"\n")
            if cut >= 0 or tail == size:
                keep = size - tail + cut + 1
                break
            tail = min(size, tail * 8)
        if keep != size:
            handle.truncate(keep)
    handle.seek(0, os.SEEK_END)
    return handle


@dataclass
class _Work:
    """One item on its way: the results file it goes to, its hash, input bytes, the item."""

    out: IO[bytes]
    h: int
    size: int
    item: Any


class _ItemPacker:
    """The task's packer, given the items of the work on its way."""

    def __init__(self, inner: Packer[Any]):
        self.inner = inner

    def add(self, work: _Work) -> bool:
        return self.inner.add(work.item)


def _quietly(hook: Callable[..., None], *args: Any) -> None:
    """Run a sink's early hook; what fails there is done again by the final merge."""
    with contextlib.suppress(Exception):
        hook(*args)


def _failed(task: ItemTask, item: Any, exc: BaseException) -> dict[str, Any]:
    return error_result(task, item, f"{type(exc).__name__}: {exc}")


async def run_shards_async(task: ItemTask, shards: list[tuple[Path, Path]], *,
                           registry: str | None, timeout: float = 600.0,
                           in_flight: int | None = None) -> dict[str, Any]:
    """Run the items of `shards` (one stream, pipelined) and append their results.

    Each unit (one item, or a batch of a task with a `packer`) goes to one endpoint, under
    that endpoint's adaptive in-flight limit, or `in_flight` units in all when given.
    """
    from nerschat.client.connect import aconnect, pool_of, routed_http_client

    started = time.monotonic()
    model = task_model(task)
    # No readiness wait of its own: the run waited once; requests wait in the transport.
    client = await asyncio.to_thread(aconnect, model, task.kind if model is None else None,
                                     Registry.of(registry), timeout,
                                     wait=False, max_retries=0)
    pool = pool_of(client)
    http = routed_http_client(pool, timeout=timeout)
    pool.refresh(force=True)
    ready = [load.endpoint for load in pool.loads()]
    lengths = [e.max_model_len for e in ready if e.max_model_len]
    clients = Clients(client, http, max_model_len=min(lengths) if lengths else None,
                      endpoints=ready)
    counts = {"items": 0, "errors": 0}
    writers: dict[Path, IO[bytes]] = {}
    process_batch = getattr(task, "process_batch", None)
    make_packer = getattr(task, "packer", None)
    route = getattr(task, "route_model", None)

    sink = task_sink(task)
    pending: dict[IO[bytes], list[Any]] = {}  # writer -> [items not finished, all sent, shard]
    finishing: list[asyncio.Future[None]] = []

    def shard_done(out: IO[bytes]) -> None:
        entry = pending[out]
        if entry[0] == 0 and entry[1]:
            finishing.append(asyncio.ensure_future(asyncio.to_thread(_quietly,
                                                                     sink.shard_finished,
                                                                     *entry[2])))

    def stream() -> Iterator[_Work]:
        for shard_in, results in shards:
            done = done_hashes(results)
            out = writers[results] = open_results(results)
            entry = pending[out] = [0, False, (shard_in, results)]
            for h, size, item in _shard_items(task, shard_in, done):
                entry[0] += 1
                yield _Work(out, h, size, item)
            entry[1] = True
            shard_done(out)

    async def results_of(unit: Unit[_Work]) -> list[dict[str, Any]]:
        endpoint = unit.endpoint
        if callable(process_batch):
            try:
                return list(await process_batch(clients, endpoint, [w.item for w in unit.work]))
            except Exception as exc:  # noqa: BLE001 - any failure is these items' error
                return [_failed(task, w.item, exc) for w in unit.work]
        own = clients
        if endpoint is not None and endpoint.max_model_len:
            own = replace(clients, max_model_len=endpoint.max_model_len)
        out = []
        for w in unit.work:
            try:
                out.append(await task.process(own, w.item))
            except Exception as exc:  # noqa: BLE001 - any failure is this item's error
                out.append(_failed(task, w.item, exc))
        return out

    async def handle(unit: Unit[_Work]) -> None:
        lines: dict[IO[bytes], list[bytes]] = {}
        for w, result in zip(unit.work, await results_of(unit)):
            ok = result.get("error") is None
            counts["items"] += 1
            counts["errors"] += not ok
            lines.setdefault(w.out, []).append(result_line(w.h, ok, result))
        for out, chunk in lines.items():
            try:
                out.write(b"".join(chunk))
                out.flush()
            except OSError as exc:
                raise OutputError(f"{out.name}: cannot write ({exc.strerror or exc})") from None
            pending[out][0] -= len(chunk)
            shard_done(out)

    def model_of(work: _Work) -> str | None:
        return model if route is None else route(work.item)

    try:
        await dispatch(stream(), handle, pool, model_of=model_of,
                       packer=(lambda endpoint: _ItemPacker(make_packer(endpoint)))
                       if callable(make_packer) else None,
                       in_flight=in_flight, size=lambda w: w.size,
                       max_size=MAX_IN_FLIGHT_BYTES)
        await asyncio.gather(*finishing)
    finally:
        for out in writers.values():
            with contextlib.suppress(OSError):
                out.flush()
                os.fsync(out.fileno())
            out.close()
        await http.aclose()
        await client.close()
    return {**counts, "seconds": round(time.monotonic() - started, 3)}


def run_shard(task_spec: dict[str, Any], input_path: str, result_path: str,
              registry: str | None, timeout: float = 600.0,
              in_flight: int | None = None) -> dict[str, Any]:
    """Synchronous entry point of one shard: what the Parsl client app runs on a worker."""
    return asyncio.run(run_shards_async(rebuild_task(task_spec),
                                        [(Path(input_path), Path(result_path))],
                                        registry=registry, timeout=timeout, in_flight=in_flight))


class ShardRunner:
    """Runs planned shards in this process (one pipelined stream), or as Parsl apps.

    With `config_path`, that Parsl config is loaded for the run; with `parsl_loaded=True`, the
    caller's already loaded config is used (inside a pipeline). Apps go to `executor`.
    """

    def __init__(self, config_path: str | None = None, executor: str = "clients",
                 parsl_loaded: bool = False):
        self.config_path = config_path
        self.executor = executor
        self.parsl_loaded = parsl_loaded

    @property
    def uses_parsl(self) -> bool:
        """True if shards run as Parsl apps (a config file given, or one already loaded)."""
        return self.parsl_loaded or self.config_path is not None

    def run(self, task: ItemTask, shards: list[tuple[Path, Path]], *, registry: str | None,
            in_flight: int | None, timeout: float) -> list[dict[str, Any]]:
        """Run `shards` (input, result path pairs); one report dict per in-process run or Parsl app.

        `timeout` is seconds per request; `in_flight` caps concurrent requests (None: adaptive).
        """
        if not self.uses_parsl:
            return [asyncio.run(run_shards_async(task, shards, registry=registry,
                                                 timeout=timeout, in_flight=in_flight))]
        from nerschat.parsl.apps import item_shard_app
        from nerschat.parsl.config import parsl_session

        with parsl_session(None if self.parsl_loaded else self.config_path):
            app = item_shard_app(self.executor)
            futures = [app(task.to_dict(), str(inp), str(out), registry, timeout, in_flight)
                       for inp, out in shards]
            return [f.result() for f in futures]


# -- the whole run ----------------------------------------------------------------------

@dataclass
class RunReport:
    """What a run did; `merged` counts the output lines (written, errors, missing)."""

    total: int
    skipped_done: int
    invalid: int
    processed: int
    seconds: float
    merged: dict[str, int]
    output: Path
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def items_per_second(self) -> float:
        """Items processed per second of wall time (0.0 for a zero-length run)."""
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def only_model(ready: list[Endpoint]) -> str:
    """The one model served by `ready`; AmbiguousModel if there are several."""
    models = sorted({e.model for e in ready})
    if len(models) != 1:
        raise AmbiguousModel(f"several models are ready ({', '.join(models)}): pass --model")
    return models[0]


def run_items(task: ItemTask, input_path: str | Path, output_path: str | Path, *,
              registry: str | None = None, model: str | None = None, shards: int | None = None,
              in_flight: int | None = None, skip_invalid: bool = False,
              runner: ShardRunner | None = None, timeout: float = 600.0,
              console: Console | None = None, show_progress: bool = True,
              restart_run: bool = False) -> RunReport:
    """Validate the input, run what is not done yet over the endpoints, merge the output.

    `model` (or the task's own) is resolved once, bound to the task and fingerprinted with
    the rest of its configuration. Raises InputError (a bad line), ConfigChanged (the output
    holds another configuration's results), EndpointTimeout (nothing ready in `timeout` s).
    """
    input_path, output_path = Path(input_path), Path(output_path)
    console = console or Console(stderr=True)
    runner = runner or ShardRunner()
    sink = task_sink(task)
    workdir = sink.workdir(output_path)
    sink.check_output(input_path, output_path)
    with output_lock(workdir, output_path):
        return _run_locked(task, sink, workdir, input_path, output_path, registry=registry,
                           model=model, shards=shards, in_flight=in_flight,
                           skip_invalid=skip_invalid, runner=runner, timeout=timeout,
                           console=console, show_progress=show_progress,
                           restart_run=restart_run)


def _run_locked(task: ItemTask, sink: Sink, workdir: Path, input_path: Path, output_path: Path,
                *, registry: str | None, model: str | None, shards: int | None,
                in_flight: int | None, skip_invalid: bool, runner: ShardRunner,
                timeout: float, console: Console, show_progress: bool,
                restart_run: bool) -> RunReport:
    from nerschat.client.readiness import wait_for_endpoints
    from nerschat.workflows.progress import RunProgress

    if restart_run:
        sink.restart(output_path)
    if model is not None:
        task.bind_model(model)
    check_config(workdir, output_path, task_config(task))
    if task_model(task) is None and task.needs_model():
        previous = stored_config(workdir).get("model")
        if isinstance(previous, str):
            task.bind_model(previous)  # checked against what is served below
    started = time.monotonic()
    work = plan(task, input_path, output_path, shards=shards, skip_invalid=skip_invalid,
                run=next_run(workdir))
    if not len(work.order):
        if work.invalid:
            raise NoItems(f"{input_path}: no valid items: all {work.invalid} are invalid; see "
                          f"{sink.errors_path(output_path)}")
        raise NoItems(f"{input_path}: no items (the input is empty); nothing to do")
    if work.invalid:
        console.print(f"[yellow]{work.invalid} invalid line(s) skipped[/]; see "
                      f"{escape(str(sink.errors_path(output_path)))}", highlight=False)
    results: list[dict[str, Any]] = []
    if work.todo:
        reg = Registry.of(registry)
        kind = task.kind if task_model(task) is None else None
        ready = _wait(wait_for_endpoints, reg, task_model(task), kind, timeout, console,
                      show_progress)
        if task_model(task) is None and task.needs_model():
            task.bind_model(only_model(ready))
        check_config(workdir, output_path, task_config(task))
        check = getattr(task, "check_endpoints", None)
        if callable(check):
            check([e for e in ready if task_model(task) in (None, e.model)])
        write_json(workdir / "config.json", task_config(task))
        if not runner.uses_parsl:
            sink.prepare(work.shards, work.todo == len(work.order), output_path,
                         task_config(task))
        with RunProgress(console, f"{task.name} {input_path.name}", work.todo,
                         [out for _, out in work.shards], reg, task_model(task), kind,
                         enabled=show_progress, unit=getattr(task, "unit", "items")):
            results = runner.run(task, work.shards, registry=str(reg.path),
                                 in_flight=in_flight, timeout=timeout)
    elif not (workdir / "config.json").exists() and task_model(task) is not None:
        workdir.mkdir(parents=True, exist_ok=True)
        write_json(workdir / "config.json", task_config(task))
    merged = sink.merge(workdir, work.order, output_path, task_config(task))
    return RunReport(total=len(work.order), skipped_done=len(work.order) - work.todo,
                     invalid=work.invalid, processed=work.todo,
                     seconds=time.monotonic() - started, merged=merged, output=output_path,
                     results=results)


def _wait(wait: Callable[..., list[Endpoint]], reg: Registry, model: str | None,
          kind: str | None, timeout: float, console: Console, show_progress: bool
          ) -> list[Endpoint]:
    if show_progress and console.is_terminal:
        with console.status("waiting for a ready endpoint") as status:
            return wait(reg, model, kind, timeout,
                        on_status=lambda s: status.update(f"waiting: {escape(s)}"))
    return wait(reg, model, kind, timeout)
