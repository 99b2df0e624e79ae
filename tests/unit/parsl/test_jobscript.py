"""A launched job runs its body only if it is the one `nerschat launch` wrote (team registries:
a teammate could rename `jobs/` and plant another script under the same name)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nerschat.errors import UsageError
from nerschat.parsl.jobscript import digest, run_command, write_body
from nerschat.parsl.launch import Replica, plan, render_scripts
from nerschat.registry import Registry

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


def job_body(sha256: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NERSCHAT, "job-body", "--sha256", sha256, str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_body_written_runs(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    out = tmp_path / "ran"
    body = f"#!/bin/bash\necho \"ran $0\" > {out}\n"
    path = write_body(jobs, "p.sh", body, 0o700)
    result = job_body(digest(body), path)
    assert result.returncode == 0, result.stderr
    assert out.read_text() == f"ran {path}\n"


def test_a_substituted_body_is_not_run(tmp_path: Path) -> None:
    """The attack: rename jobs/ away and put another script under the same path."""
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    out = tmp_path / "owned"
    body = "#!/bin/bash\necho fine\n"
    path = write_body(jobs, "p.sh", body, 0o700)
    jobs.rename(tmp_path / "jobs.old")
    jobs.mkdir()
    path.write_text(f"#!/bin/bash\ntouch {out}\n")
    result = job_body(digest(body), path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: job body {path} is not the one submitted")
    assert result.stderr.count("\n") == 1 and not out.exists()


def test_a_link_in_place_of_the_body_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real.sh"
    real.write_text("echo hi\n")
    link = tmp_path / "p.sh"
    link.symlink_to(real)
    result = job_body(digest("echo hi\n"), link)
    assert result.returncode == 1 and "a symbolic link; not run" in result.stderr


def test_writing_never_goes_through_a_link_or_into_a_foreign_directory(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (jobs / "p.sh").symlink_to(victim)
    path = write_body(jobs, "p.sh", "echo new\n", 0o700)
    assert victim.read_text() == "precious\n" and path.read_text() == "echo new\n"
    linked = tmp_path / "linked-jobs"
    linked.symlink_to(jobs)
    with pytest.raises(UsageError, match="not your own directory"):
        write_body(linked, "q.sh", "echo\n", 0o700)


def test_submitted_command_carries_the_digest_and_no_shell_expansion(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "r")
    launch_plan = plan([Replica("stub", "m")], site="local", registry=registry, check=False)
    body_path = registry.path.absolute() / "jobs" / f"{launch_plan.jobs[0].ids[0]}.sh"
    command = run_command(body_path, launch_plan.jobs[0].body)
    assert command.startswith("nerschat job-body --sha256 " + digest(launch_plan.jobs[0].body))
    assert "$" not in command and "`" not in command
    assert command in render_scripts(launch_plan)


def test_bad_digest_argument_is_a_usage_error(tmp_path: Path) -> None:
    result = job_body("abc", tmp_path / "p.sh")
    assert result.returncode == 2 and "not a SHA-256 digest" in result.stderr
    assert os.listdir(tmp_path) == []
