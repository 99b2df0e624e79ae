"""SLURM job ids and time limits: the one check before a command line, the one time parser.

Field attack #4 (a registry job id `--user=root` reached `scancel` as an option) and #12
(`--walltime 1-00:00:00` passed nerschat's check and crashed Parsl; `abc` and `99:99:99`
were accepted for `--site local`, whose walltime was not applied).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from parsl.utils import wtime_to_minutes

from nerschat import slurm
from nerschat.errors import UsageError
from nerschat.parsl.config import ConfigError, walltime_seconds
from nerschat.parsl.launch import Replica, plan, render_scripts
from nerschat.registry import Registry
from nerschat.slurm import JobIdError, job_operands, parse_walltime
from tests.fakes import slurm_commands

NERSCHAT = [sys.executable, "-m", "nerschat.cli.main"]


@pytest.mark.parametrize("job", ["4242", "4242_7", "4242+1", "4242.batch", "4242_7.0"])
def test_job_id_forms(job: str) -> None:
    assert slurm.is_job_id(job) and slurm.job_id_problem(job) is None
    assert job_operands([job]) == ["--", job]


@pytest.mark.parametrize("bad", ["--user=root", "-1", "4242;id", "4242 4243", "", "４２",
                                 "4242\n", "abc", 4242, None, "1" * 20])
def test_non_job_ids_never_reach_slurm(bad: object, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    assert not slurm.is_job_id(bad)
    with pytest.raises(JobIdError, match="is not a SLURM job id"):
        job_operands(["4242", bad])  # type: ignore[list-item]
    log = tmp_path / "calls.log"
    for name, value in slurm_commands.install(tmp_path / "bin", log).items():
        monkeypatch.setenv(name, value)
    problem = slurm.scancel(["4242", bad])  # type: ignore[list-item]
    assert problem is not None and "is not a SLURM job id" in problem
    assert "scancel" not in log.read_text()  # nothing cancelled at all, not even 4242


def test_scancel_puts_ids_after_double_dash(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    for name, value in slurm_commands.install(tmp_path / "bin", log).items():
        monkeypatch.setenv(name, value)
    assert slurm.scancel(["4243", "4242_1"]) is None
    assert log.read_text().splitlines() == ["scancel -- 4242_1 4243"]


def test_stop_all_never_passes_a_planted_job_id(registry: Registry, tmp_path: Path) -> None:
    """The field case: a `pending` entry whose job id is an option is a problem, not a job."""
    import json

    from tests.conftest import make_endpoint

    data = {**make_endpoint(id="evil", state="pending", url="", pid=0, ttl=3600.0).to_dict(),
            "slurm_job_id": "--user=root"}
    (registry.path / "evil.json").write_text(json.dumps(data))
    env = {**os.environ, **slurm_commands.install(tmp_path / "bin", tmp_path / "calls.log")}
    result = subprocess.run([*NERSCHAT, "stop", "--all", "--cancel-pending", "--timeout", "1",
                             "--registry", str(registry.path)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert "--user=root" not in (tmp_path / "calls.log").read_text()
    assert "Traceback" not in result.stderr
    listing = subprocess.run([*NERSCHAT, "ls", "--registry", str(registry.path)],
                             capture_output=True, text=True, env=env, timeout=60)
    assert "field 'slurm_job_id': '--user=root' is not a SLURM job id" in \
        " ".join(listing.stderr.split())


@pytest.mark.parametrize(("text", "seconds", "hms"), [
    ("30", 1800, "00:30:00"), ("90", 5400, "01:30:00"), ("05:30", 330, "00:05:30"),
    ("01:30:00", 5400, "01:30:00"), ("48:00:00", 172800, "48:00:00"),
    ("1-00", 86400, "24:00:00"), ("1-02:30", 95400, "26:30:00"),
    ("1-00:00:00", 86400, "24:00:00"), ("2-12:00:05", 216005, "60:00:05"),
    (" 00:10:00 ", 600, "00:10:00"),
])
def test_walltime_forms(text: str, seconds: int, hms: str) -> None:
    walltime = parse_walltime(text)
    assert walltime.seconds == seconds and walltime.hms == hms
    assert wtime_to_minutes(walltime.hms) == seconds // 60  # what Parsl's SlurmProvider takes
    assert walltime_seconds(text) == seconds


@pytest.mark.parametrize(("text", "reason"), [
    ("abc", "is not a SLURM time"), ("99:99:99", "below 60"), ("01:60:00", "below 60"),
    ("10:75", "below 60"), ("1-24:00:00", "below 24"), ("00:00:30", "less than a minute"),
    ("0", "less than a minute"), ("400-00:00:00", "more than a year"), ("", "is not a SLURM"),
    ("1:2:3:4", "is not a SLURM"), ("-5", "is not a SLURM"), ("UNLIMITED", "is not a SLURM"),
    ("１０", "is not a SLURM"),
])
def test_walltime_garbage_is_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_walltime(text)
    with pytest.raises(ConfigError, match=reason):
        walltime_seconds(text)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "calls.log"
    for name, value in slurm_commands.install(tmp_path / "bin", log).items():
        monkeypatch.setenv(name, value)
    for name in ("NERSCHAT_ACCOUNT", "NERSCHAT_QOS", "NERSCHAT_WALLTIME", "NERSCHAT_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    return log


@pytest.mark.parametrize("site", ["slurm", "perlmutter"])
def test_day_walltime_reaches_sbatch_in_minutes(site: str, fake_slurm: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_ACCOUNT", "m1234")
    monkeypatch.setenv("NERSCHAT_ENV", str(tmp_path / "venv"))
    launch_plan = plan([Replica("stub", "m")], site=site, registry=Registry(tmp_path / "r"),
                       walltime="1-00:00:00", check=False)
    script = render_scripts(launch_plan)
    assert "#SBATCH --time=1440" in script
    assert "--walltime 24:00:00" in script


def test_walltime_from_the_environment_is_normalised_too(fake_slurm: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_WALLTIME", "2-00")
    script = render_scripts(plan([Replica("stub", "m")], site="slurm",
                                 registry=Registry(tmp_path / "r"), check=False))
    assert "#SBATCH --time=2880" in script
    monkeypatch.setenv("NERSCHAT_WALLTIME", "99:99:99")
    with pytest.raises(ConfigError, match="below 60"):
        plan([Replica("stub", "m")], site="slurm", registry=Registry(tmp_path / "r"),
             check=False)


def test_local_site_applies_the_walltime(tmp_path: Path) -> None:
    """`--site local` has no scheduler: each pilot gets the walltime and ends by it."""
    launch_plan = plan([Replica("stub", "m")], site="local", registry=Registry(tmp_path / "r"),
                       walltime="10")
    assert "--walltime 00:10:00" in launch_plan.jobs[0].body
    with pytest.raises(UsageError, match="not longer than the drain margin"):
        plan([Replica("stub", "m")], site="local", registry=Registry(tmp_path / "r"),
             walltime="1")


@pytest.mark.parametrize(("walltime", "message"), [
    ("abc", "'--walltime': walltime 'abc' is not a SLURM time"),
    ("99:99:99", "'--walltime': walltime '99:99:99': minutes and seconds must be below 60"),
])
@pytest.mark.parametrize("command", [["launch", "--site", "local", "--print-script"],
                                     ["pool", "start", "--site", "local"], ["serve"]])
def test_cli_refuses_garbage_walltimes(walltime: str, message: str, command: list[str],
                                       tmp_path: Path) -> None:
    result = subprocess.run([*NERSCHAT, *command, "--engine", "stub", "--model", "m",
                             "--walltime", walltime, "--registry", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(("env", "value"), [("NERSCHAT_CORES_PER_NODE", "many"),
                                            ("NERSCHAT_GPUS_PER_NODE", "-2")])
def test_bad_numbers_from_the_environment_are_one_line(env: str, value: str, tmp_path: Path,
                                                       fake_slurm: Path) -> None:
    result = subprocess.run([*NERSCHAT, "launch", "--site", "slurm", "--engine", "stub",
                             "--model", "m", "--print-script", "--no-check",
                             "--registry", str(tmp_path / "r")],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, env: value})
    assert result.returncode == 2, result.stderr
    assert f"is not an integer >= 0 (argument or ${env})" in result.stderr
    assert result.stderr.count("\n") == 1
