"""`nerschat launch --site slurm --engine stub --model m --replicas 3` on the local SLURM while
another job holds the node: three jobs, visible at once as `pending` with SLURM's reason in
`ls`, `wait` and `logs`; ready once the node frees; `stop --all` leaves no job and no entry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.conftest import squeue_ids
from tests.integration.launching import hold_the_node, launch_json, nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_pending_with_reason_then_ready_then_stop_all(registry: Registry, our_jobs: list[str],
                                                      tmp_path: Path) -> None:
    blocker = hold_the_node(tmp_path, our_jobs)
    reg = ("--registry", str(registry.path))
    jobs = launch_json("--site", "slurm", "--engine", "stub", "--model", "m", "--replicas", "3",
                       "--walltime", "00:05:00", *reg, our_jobs=our_jobs)
    job_ids = {str(j["job_id"]) for j in jobs}
    assert len(jobs) == 3 and all(j["slurm"] for j in jobs)
    ids = [str(i) for j in jobs for i in j["ids"]]  # type: ignore[attr-defined]
    assert {e.id: (e.state, e.slurm_job_id) for e in registry.scan().entries} == {
        str(j["ids"][0]): ("pending", str(j["job_id"])) for j in jobs}  # type: ignore[index]

    # ls: each pending entry names its job and SLURM's reason.
    rows = json.loads(nerschat("ls", "--json", *reg).stdout)
    assert {r["status"] for r in rows} == {"pending"}
    for row in rows:
        assert row["queue"]["job_id"] == row["slurm_job_id"] and row["queue"]["state"] == "PENDING"
        assert row["queue"]["reason"] in ("Resources", "Priority")
        assert row["detail"].startswith(f"job {row['slurm_job_id']} pending: waiting ")
    table = nerschat("ls", *reg).stdout
    assert table.count(" pending: waiting ") == 3
    # wait: says what it waits for (the job and why), then gives up at its timeout.
    waited = nerschat("wait", "--model", "m", "--timeout", "3", *reg)
    assert waited.returncode == 1
    assert "pilot SLURM job" in waited.stderr and any(j in waited.stderr for j in job_ids)
    progress = [line for line in waited.stderr.splitlines() if line.startswith("waiting: ")]
    assert progress and "pilot SLURM job" in progress[0]  # said while waiting, not only at the end
    # logs: no server log yet, said plainly with the job.
    note = nerschat("logs", ids[0], *reg)
    assert note.returncode == 0, note.stderr
    assert f"{ids[0]} has not started, so it has no server log yet: job " in \
        " ".join(note.stderr.split())

    subprocess.run(["scancel", blocker], check=True)
    wait_until(lambda: len(registry.endpoints("m")) == 3, 120, "three ready pilots")
    assert {e.slurm_job_id for e in registry.endpoints("m")} == job_ids
    assert {r["status"] for r in json.loads(nerschat("ls", "--json", *reg).stdout)} == {"ready"}
    log = nerschat("logs", ids[0], *reg)
    assert log.returncode == 0 and f"# nerschat pilot {ids[0]}:" in log.stdout

    stop = nerschat("stop", "--all", *reg)
    assert stop.returncode == 0, stop.stderr
    wait_until(lambda: not set(squeue_ids()) & job_ids, 60, "the pilot jobs to end")
    assert registry.scan().entries == []
