"""The output is never the input, never foreign files, and written by one run at a time."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nerschat.workflows.core import run_items
from nerschat.workflows.embed import EmbedTask, NpySink, run_embed
from nerschat.workflows.outputs import OutputBusy, OutputRefused, output_lock
from nerschat.workflows.tasks import BatchTask, JudgeTask


def items(path: Path) -> bytes:
    data = b'{"id": "q0", "question": "a", "answers": ["x", "y"]}\n'
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("link", ["same", "symlink", "hardlink"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path: Path,
                                                                link: str) -> None:
    source = tmp_path / "in.jsonl"
    data = items(source)
    output = source
    if link == "symlink":
        output = tmp_path / "alias.jsonl"
        output.symlink_to(source)
    elif link == "hardlink":
        output = tmp_path / "hard.jsonl"
        os.link(source, output)
    for task in (JudgeTask(), BatchTask()):
        with pytest.raises(OutputRefused):
            run_items(task, source, output, registry=str(tmp_path / "reg"), timeout=0)
    assert source.read_bytes() == data


def test_symlinked_output_is_refused_not_replaced(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    items(source)
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("keep\n")
    output = tmp_path / "out.jsonl"
    output.symlink_to(target)
    with pytest.raises(OutputRefused, match="symbolic link"):
        run_items(JudgeTask(), source, output, registry=str(tmp_path / "reg"), timeout=0)
    assert output.is_symlink() and target.read_text() == "keep\n"


def test_embed_output_holding_the_input_or_other_files_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n')
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("code\n")
    for restart in (False, True):
        with pytest.raises(OutputRefused, match="input"):
            run_embed(corpus, tmp_path, registry=str(tmp_path / "reg"), restart_run=restart,
                      timeout=0, show_progress=False)
    assert corpus.exists() and (tmp_path / "src" / "main.py").exists()
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    with pytest.raises(OutputRefused, match="notes.txt"):
        run_embed(corpus, out, registry=str(tmp_path / "reg"), restart_run=True, timeout=0,
                  show_progress=False)
    assert (out / "notes.txt").read_text() == "mine\n"


def test_foreign_manifest_is_not_overwritten(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n')
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text('{"name": "my package"}')
    with pytest.raises(OutputRefused, match="manifest"):
        run_embed(corpus, out, registry=str(tmp_path / "reg"), timeout=0, show_progress=False)
    assert json.loads((out / "manifest.json").read_text()) == {"name": "my package"}


def test_restart_removes_only_what_embed_wrote(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".work").mkdir(parents=True)
    (out / ".work" / "results-000-0000.jsonl").write_text("x\n")
    for name in ("shard-00000.npy", "shard-00000.ids.jsonl", "shard-00000.json",
                 "manifest.json", "invalid.jsonl", ".shard-00001.npy.ab_c12.tmp"):
        (out / name).write_text("x")
    (out / "manifest.json").write_text('{"shards": [], "dtype": "float32"}')
    sink = NpySink()
    sink.check_output(tmp_path / "in.jsonl", out)  # all of them are ours
    sink.restart(out)
    assert sorted(p.name for p in out.rglob("*")) == [".work"]


def test_a_second_run_on_the_same_output_refuses_at_once(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    items(source)
    output = tmp_path / "out.jsonl"
    with output_lock(output.with_name("out.jsonl.parts"), output):
        with pytest.raises(OutputBusy, match=f"pid {os.getpid()}"):
            run_items(JudgeTask(), source, output, registry=str(tmp_path / "reg"), timeout=0)
    out = tmp_path / "emb"
    with output_lock(EmbedTask().sink.workdir(out), out):
        with pytest.raises(OutputBusy, match="another run"):
            run_embed(source, out, registry=str(tmp_path / "reg"), timeout=0,
                      show_progress=False)


@pytest.mark.parametrize("content", ["", "\n", '{"not": "valid"}\n'])
@pytest.mark.parametrize("workflow", ["judge", "run-batch", "embed"])
def test_no_valid_items_is_the_same_usage_error_in_every_workflow(
        tmp_path: Path, content: str, workflow: str) -> None:
    from nerschat.errors import UsageError
    from nerschat.workflows.core import NoItems

    source = tmp_path / "in.jsonl"
    source.write_text(content)
    reg = str(tmp_path / "reg")
    with pytest.raises(NoItems, match="nothing to do" if not content.strip() else
                       "no valid items") as info:
        if workflow == "embed":
            run_embed(source, tmp_path / "out", registry=reg, skip_invalid=True, timeout=0,
                      show_progress=False)
        else:
            task = JudgeTask() if workflow == "judge" else BatchTask()
            run_items(task, source, tmp_path / "out.jsonl", registry=reg, skip_invalid=True,
                      timeout=0)
    assert isinstance(info.value, UsageError)
    # A refused run leaves no work directory (nor its lock) behind; only the errors file
    # says which lines were invalid.
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")
                  if p.name not in ("in.jsonl", "reg") and not p.is_dir())
    assert left == ([] if not content.strip() else
                    ["out/invalid.jsonl"] if workflow == "embed" else ["out.errors.jsonl"])
    assert not (tmp_path / "out").is_dir() or workflow == "embed" and left


@pytest.mark.parametrize("argv", [["judge", "{src}", "-o", "{src}"],
                                  ["run-batch", "-i", "{src}", "-o", "{src}"],
                                  ["embed", "{src}", "-o", "{dir}", "--restart"]])
def test_the_commands_refuse_to_overwrite_their_input(tmp_path: Path, argv: list[str]) -> None:
    import subprocess
    import sys

    source = tmp_path / "in.jsonl"
    data = items(source)
    args = [a.format(src=source, dir=tmp_path) for a in argv]
    done = subprocess.run([sys.executable, "-c", "from nerschat.cli.main import main; main()",
                           *args, "--registry", str(tmp_path / "reg"), "--timeout", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "input" in done.stderr
    assert source.read_bytes() == data
