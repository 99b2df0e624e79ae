"""The pipeline scripts on the local Parsl config with stub engines: pilots kept ready as a
pool by default (stopped afterwards), plain Parsl pilot apps with --fixed-pilots, a summary
with the run's cost either way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nerschat.pool import state as store
from nerschat.registry import Registry
from tests.integration.conftest import REPO

pytestmark = [pytest.mark.slow]


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, str(REPO / "pipelines" / script), *args,
         "--config", str(REPO / "parsl_configs" / "local.py"), "--engine", "stub",
         "--registry", str(cwd / "registry")],
        capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.mark.parametrize("fixed", [False, True], ids=["pool", "fixed-pilots"])
def test_batch_judge_runs_with_a_pool_or_fixed_pilots(tmp_path: Path, fixed: bool) -> None:
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    items = [json.loads(x) for x in
             (REPO / "examples" / "data" / "judge_sample.jsonl").read_text().splitlines()[:40]]
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    result = run("batch_judge.py", str(source), "-o", str(output), "--model", "judge-m",
                 "--pilots", "1", *(["--fixed-pilots"] if fixed else []), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    assert [r["id"] for r in lines] == [i["id"] for i in items]
    assert all(r["error"] is None for r in lines)
    assert "GPU-hours used" in result.stderr and "(1 server(s)" in result.stderr
    registry = Registry(tmp_path / "registry")
    states = store.list_states(registry)
    if fixed:
        assert states == [] and "1 pilot(s) ready" in result.stderr
    else:
        (state,) = states
        assert state.status == "stopped" and f"pool {state.id}: 1 pilot(s) ready" in result.stderr
        assert [m.reason for m in state.members] == ["pool stopped"]
    assert registry.scan().entries == []  # every pilot has left


def test_embed_corpus_runs_with_a_pool(tmp_path: Path) -> None:
    source = tmp_path / "corpus.jsonl"
    lines = (REPO / "examples" / "data" / "corpus.jsonl").read_text().splitlines()[:200]
    source.write_text("\n".join(lines) + "\n")
    result = run("embed_corpus.py", str(source), "-o", str(tmp_path / "emb"), "--model",
                 "embed-m", "--pilots", "1", "--query", "red planet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded 200 documents with embed-m" in result.stderr
    assert "GPU-hours used 0.000 (1 server(s)" in result.stderr
    (state,) = store.list_states(Registry(tmp_path / "registry"))
    assert state.status == "stopped" and state.served_model == "embed-m"
