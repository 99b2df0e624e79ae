"""Pilots in real SLURM jobs on the repo's local cluster, through Parsl and through sbatch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import parsl
import pytest

import nerschat
from nerschat.parsl.apps import smoke_test_app
from nerschat.parsl.config import CLIENT_EXECUTOR, load_config_module
from nerschat.parsl.pilots import PilotGroup
from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.conftest import REPO, sbatch, squeue_ids

pytestmark = [pytest.mark.slow, pytest.mark.slurm]

SERVE_SCRIPT = str(REPO / "scripts" / "nerschat-serve.sbatch")



def test_parsl_pilots_on_two_gpus_and_a_client_app(slurm_jobs: list[str], tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    module = load_config_module(REPO / "parsl_configs" / "slurm.py")
    config = module.make_config(gpus_per_node=2, walltime="00:10:00",
                                run_dir=str(tmp_path / "runinfo"))
    before = set(squeue_ids())
    dfk = parsl.load(config)
    try:
        group = PilotGroup("stub", "m1", count=2, registry=registry, ttl=10, grace_period=5)
        with group:
            ready = group.wait_ready(timeout=120)
            assert len(ready) == 2
            assert sorted(e.gpus or "" for e in ready) == ["0", "1"]
            assert all(e.slurm_job_id for e in ready)
            app = smoke_test_app(CLIENT_EXECUTOR)
            tallies = app("m1", str(registry.path), 40).result(timeout=120)
            assert set(tallies) == {e.id for e in ready}
            assert all(n > 0 for n in tallies.values())
        results = [f.result() for f in group.futures]
        assert {r["cuda_visible_devices"] for r in results} == {"0", "1"}
        assert all(r["exit_code"] == 0 for r in results)
    finally:
        dfk.cleanup()
        parsl.clear()
    assert registry.scan().entries == []
    wait_until(lambda: not (set(squeue_ids()) - before), 60, "Parsl's blocks to leave squeue")


def test_scancel_of_a_pilot_job_moves_clients_on(slurm_jobs: list[str], tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    env = f"ALL,NERSCHAT_ENV={sys.prefix}"
    jobs = [sbatch("-J", f"nerschat-test-{i}", "-t", "5", f"--export={env}",
                   f"--output={tmp_path}/job-%j.out", SERVE_SCRIPT, "--engine", "stub",
                   "--model", "m1", "--registry", str(registry.path), "--ttl", "3")
            for i in range(2)]
    slurm_jobs.extend(jobs)
    wait_until(lambda: len(registry.endpoints("m1")) == 2, 60, "two ready pilots")
    client = nerschat.connect("m1", registry=registry, wait_timeout=30, refresh_interval=0.5)
    for _ in range(10):
        client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "x"}])
    victim = registry.endpoints("m1")[0]
    subprocess.run(["scancel", victim.slurm_job_id], check=True)  # type: ignore[list-item]
    wait_until(lambda: (e := registry.get(victim.id)) is None or e.is_stale(), 30,
             "the cancelled pilot's entry to go")
    for _ in range(20):
        client.chat.completions.create(model="m1", messages=[{"role": "user", "content": "y"}])
    assert [load.id for load in nerschat.pool_of(client).loads()] != [victim.id]
    assert victim.id not in {e.id for e in registry.endpoints("m1")}


def test_pilot_drains_before_a_two_minute_walltime(slurm_jobs: list[str], tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    job = sbatch("-J", "nerschat-walltime", "-t", "2", f"--export=ALL,NERSCHAT_ENV={sys.prefix}",
                 f"--output={tmp_path}/job-%j.out", SERVE_SCRIPT, "--engine", "stub", "--model",
                 "short", "--registry", str(registry.path), "--drain-before", "100", "-v")
    slurm_jobs.append(job)
    wait_until(lambda: bool(registry.endpoints("short")), 60, "the pilot to be ready")
    (entry,) = registry.endpoints("short")
    assert entry.slurm_job_id == job
    assert entry.expires_at is not None and 60 < entry.expires_at - time.time() <= 125
    # Drains 100 s before the end, i.e. about 20 s after the start.
    wait_until(lambda: registry.get(entry.id) is None, 60, "the pilot to drain")
    assert time.time() < entry.expires_at - 60
    wait_until(lambda: job not in squeue_ids(), 30, "the job to end")
    log = (tmp_path / f"job-{job}.out").read_text()
    assert "walltime ends in" in log


def test_service_script_and_wait(slurm_jobs: list[str], tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    job = sbatch("-J", "nerschat-svc", "-t", "5", f"--export=ALL,NERSCHAT_ENV={sys.prefix}",
                 f"--output={tmp_path}/job-%j.out", SERVE_SCRIPT, "--engine", "stub",
                 "--model", "svc", "--registry", str(registry))
    slurm_jobs.append(job)
    out = subprocess.run([sys.executable, "-m", "nerschat.cli.main", "wait", "--model", "svc",
                          "--registry", str(registry), "--timeout", "60"],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("/v1")
    subprocess.run(["scancel", job], check=True)
    wait_until(lambda: Registry(registry).scan().entries == [], 30, "the entry to go")


@pytest.mark.parametrize("fixed", [False, True], ids=["pool", "fixed-pilots"])
def test_judge_workflow_with_pilots_and_clients_in_slurm_jobs(slurm_jobs: list[str],
                                                              tmp_path: Path,
                                                              fixed: bool) -> None:
    """pipelines/batch_judge.py on the slurm config: pilots and shards all run as SLURM jobs
    (the pilots as a pool's member jobs by default, as Parsl pilot apps with --fixed-pilots)."""
    source, output = tmp_path / "items.jsonl", tmp_path / "judged.jsonl"
    items = [json.loads(x) for x in
             (REPO / "examples" / "data" / "judge_sample.jsonl").read_text().splitlines()[:60]]
    source.write_text("".join(json.dumps(i) + "\n" for i in items))
    env = {**os.environ, "NERSCHAT_GPUS_PER_NODE": "2", "NERSCHAT_WALLTIME": "00:10:00"}
    # The pool's member jobs check that the registry is on a file system the nodes see.
    registry = Path.home() / ".cache" / "nerschat" / "test-pool" / uuid.uuid4().hex[:8]
    before = set(squeue_ids())
    try:
        result = subprocess.run(
            [sys.executable, str(REPO / "pipelines" / "batch_judge.py"), str(source), "-o",
             str(output), "--config", str(REPO / "parsl_configs" / "slurm.py"), "--engine",
             "stub", "--model", "m1", "--pilots", "2", "--shards", "3", "--registry",
             str(registry), *(["--fixed-pilots"] if fixed else [])],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert "2 pilot(s) ready" in result.stderr
        lines = [json.loads(x) for x in output.read_text().splitlines()]
        assert [r["id"] for r in lines] == [i["id"] for i in items]
        assert all(r["error"] is None for r in lines)
        # The shards ran as Parsl apps inside SLURM jobs, on the pilots' replicas.
        submitted = list((tmp_path / "runinfo").rglob("parsl.clients.block-*"))
        assert submitted, "no client block was submitted to SLURM"
        assert Registry(registry).scan().entries == []
    finally:
        shutil.rmtree(registry, ignore_errors=True)
    wait_until(lambda: not (set(squeue_ids()) - before), 60, "the workflow's blocks to leave")
