"""`nerschat logs ID -f` on a launched pilot: prints the server log as it grows and returns
when the pilot ends."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import wait_until
from tests.integration.conftest import squeue_ids
from tests.integration.launching import launch_json, nerschat, our_jobs, registry

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
__all__ = ["our_jobs", "registry"]  # fixtures


def test_logs_follow_a_launched_pilot_until_it_stops(registry: Registry,
                                                     our_jobs: list[str]) -> None:
    reg = ("--registry", str(registry.path))
    (job,) = launch_json("--site", "slurm", "--engine", "stub", "--model", "f", "--walltime",
                         "00:05:00", *reg, our_jobs=our_jobs)
    endpoint_id = str(job["ids"][0])  # type: ignore[index]
    wait_until(lambda: len(registry.endpoints("f")) == 1, 120, "the pilot ready")
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    follower = subprocess.Popen(
        [sys.executable, "-m", "nerschat.cli.main", "logs", endpoint_id, "-f", "--poll", "0.2",
         *reg], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PATH": path})
    try:
        assert follower.stdout is not None
        first = follower.stdout.readline()  # the log's tail is out: now it follows
        with open(registry.log_dir / f"{endpoint_id}.log", "a") as log:  # as a server would
            log.write("INFO: serving \x1b[31mrequests\x1b[0m\n")
        stop = nerschat("stop", endpoint_id, *reg)
        assert stop.returncode == 0, stop.stderr
        out, err = follower.communicate(timeout=60)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    lines = [first.rstrip("\n"), *out.splitlines()]
    assert lines[0].startswith(f"# nerschat pilot {endpoint_id}: ")
    assert "INFO: serving \\x1b[31mrequests\\x1b[0m" in lines
    assert f"{endpoint_id} ended" in err
    wait_until(lambda: str(job["job_id"]) not in squeue_ids(), 60, "the job to end")
