"""Workflow files are written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nerschat.workflows.atomic import OutputError, atomic_write


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]
    with atomic_write(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_is_one_line(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="out.jsonl: cannot write"), \
                atomic_write(tmp_path / "out.jsonl") as handle:
            handle.write("x")
    finally:
        tmp_path.chmod(0o700)
