"""`nerschat launch` without a scheduler: packing, rendering and submission against fake
`sbatch`/`sacct`/`scancel`/`shifterimg` executables on PATH."""

from __future__ import annotations

import getpass
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nerschat.parsl import preflight
from nerschat.parsl.config import Site
from nerschat.parsl.launch import (
    LaunchError,
    Replica,
    cancel_pending,
    forget_gone,
    merge_sites,
    pack,
    parse_pack,
    plan,
    render_scripts,
    submit,
)
from nerschat.pilot.engines.tei import TEI_IMAGE
from nerschat.pilot.engines.vllm import VLLM_IMAGE
from nerschat.registry import Registry
from tests.fakes import slurm_commands

REPO = Path(__file__).resolve().parents[3]
PERLMUTTER = "perlmutter"
SLURM = "slurm"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake scheduler and Shifter commands first on PATH; returns their call log."""
    log = tmp_path / "calls.log"
    for name, value in slurm_commands.install(tmp_path / "bin", log).items():
        monkeypatch.setenv(name, value)
    for name in ("NERSCHAT_ACCOUNT", "NERSCHAT_QOS", "NERSCHAT_WALLTIME", "NERSCHAT_GPUS_PER_NODE",
                 "NERSCHAT_RUNTIME", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    return log


@pytest.fixture
def perlmutter_env(fake_slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Perlmutter-like login node: pulled images, cached weights, a shared registry."""
    hf_home = tmp_path / "scratch" / "huggingface"
    snapshot = hf_home / "hub" / f"models--{MODEL.replace('/', '--')}" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    env = tmp_path / "common" / "nerschat-env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "nerschat").touch()
    monkeypatch.setenv("NERSCHAT_ENV", str(env))
    monkeypatch.setenv("FAKE_SHIFTER_IMAGES", f"{VLLM_IMAGE},{TEI_IMAGE}")
    # pytest's tmp_path is under /tmp, which the shared-registry check rightly refuses.
    monkeypatch.setattr(preflight, "NODE_LOCAL_PREFIXES", ())
    monkeypatch.setattr(preflight, "NODE_LOCAL_FS_TYPES", ())
    return hf_home


def test_pack_by_gpu_count() -> None:
    one = Replica("vllm", "m", gpus=1)
    assert [len(j) for j in pack([one] * 6, 4)] == [4, 2]
    two = Replica("vllm", "m", gpus=2)
    assert [len(j) for j in pack([two] * 3, 4)] == [2, 1]
    mixed = pack([Replica("tei", "e", 1), two, Replica("tei", "e", 1)], 4)
    assert [[r.gpus for r in job] for job in mixed] == [[2, 1, 1]]
    stub = Replica("stub", "m", gpus=0)
    assert [len(j) for j in pack([stub] * 3, 4)] == [1, 1, 1]


def test_parse_pack_keeps_colons_in_the_model() -> None:
    assert parse_pack("vllm:local:gemma-3-270m:gpus=2") == Replica("vllm", "local:gemma-3-270m", 2)
    assert parse_pack("tei:BAAI/bge-m3") == Replica("tei", "BAAI/bge-m3", 1)
    with pytest.raises(Exception, match="ENGINE:MODEL"):
        parse_pack("vllm")


def test_perlmutter_job_script_through_slurm_provider(perlmutter_env: Path, fake_slurm: Path,
                                                      tmp_path: Path) -> None:
    registry = Registry(tmp_path / "home" / "registry")
    launch_plan = plan([Replica("vllm", MODEL, gpus=1)] * 4, site=PERLMUTTER, registry=registry,
                       account="m1234", walltime="02:00:00")
    assert len(launch_plan.jobs) == 1
    script = render_scripts(launch_plan)
    for line in ("#SBATCH --constraint=gpu", "#SBATCH --gpus-per-node=4",
                 "#SBATCH --account=m1234", "#SBATCH --qos=regular", "#SBATCH --time=120",
                 "#SBATCH --exclusive", f"#SBATCH --image=docker:{VLLM_IMAGE}",
                 "#SBATCH --module=gpu,nccl-plugin"):
        assert line in script.splitlines(), line
    assert "srun --ntasks 1 -l --gpus-per-node 4 -c 128 bash" in script
    assert 'export HF_HOME="$SCRATCH/huggingface"' in script  # expanded on the node
    assert 'export TVM_FFI_CACHE_DIR="$SCRATCH/cache_tvm_ffi"' in script
    serve_lines = [line for line in script.splitlines() if " nerschat serve " in line]
    assert len(serve_lines) == 4
    for slot, line in enumerate(serve_lines):
        assert line.startswith(f'VLLM_CACHE_ROOT="$SCRATCH/cache_vllm/Llama-3.1-8B-Instruct/{slot}"')
        assert f"--runtime shifter --image {VLLM_IMAGE} --runtime-modules gpu,nccl-plugin" in line
        assert f'--gpus "$(gpu_slice {slot} 1)"' in line
        assert f"--id {launch_plan.jobs[0].ids[slot]}" in line
    assert not (registry.path / "jobs").exists(), "a dry run writes nothing"
    assert "sbatch" not in fake_slurm.read_text(), "a dry run submits nothing"


def serve_configs(script: str, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The PilotConfig each `nerschat serve` line of a rendered script builds (not run)."""
    from click.testing import CliRunner

    import nerschat.cli.serve as serve_cli

    configs: list[Any] = []

    class Recorder:
        def __init__(self, config: Any, registry: Registry) -> None:
            configs.append(config)

        def run(self, on_ready: Any = None) -> int:
            return 0

    monkeypatch.setattr(serve_cli, "Pilot", Recorder)
    for line in script.splitlines():
        if " nerschat serve " not in f" {line}":
            continue
        line = re.sub(r'"\$\(gpu_slice (\d+) (\d+)\)"', lambda m: m.group(1), line)
        argv = shlex.split(line.removesuffix(" &"))
        argv = argv[argv.index("serve") + 1:]
        result = CliRunner().invoke(serve_cli.serve, argv)
        assert result.exit_code == 0, result.output
    return configs


def test_perlmutter_pilots_run_shifter_with_the_pinned_image_and_nersc_modules(
        perlmutter_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Shifter command line each pilot of the rendered script runs (PERLMUTTER.md #5, #7,
    #11): `shifter --image=<pinned> --module=gpu,nccl-plugin --env=... <program>`."""
    from nerschat.pilot.engines import LaunchRequest, get_engine
    from nerschat.pilot.runtimes import get_runtime

    launch_plan = plan([Replica("vllm", MODEL, gpus=1), Replica("tei", "BAAI/bge-m3", gpus=1)],
                       site=PERLMUTTER, registry=Registry(tmp_path / "home" / "registry"),
                       account="m1234", check=False)
    script = render_scripts(launch_plan)
    configs = serve_configs(script, monkeypatch)
    assert [(c.engine, c.runtime, c.runtime_modules) for c in configs] == [
        ("vllm", "shifter", ("gpu", "nccl-plugin")), ("tei", "shifter", ("gpu", "nccl-plugin"))]
    programs = {"vllm": ["vllm", "serve"], "tei": ["text-embeddings-router"]}
    for config, image in zip(configs, (VLLM_IMAGE, TEI_IMAGE)):
        assert config.image == image
        server = get_engine(config.engine).launch(LaunchRequest(
            model=config.model, port=8001, api_key="k", gpus=config.gpus, containerized=True,
            image=config.image))
        argv = get_runtime(config.runtime, config.runtime_modules).wrap(server, image).argv
        assert argv[:3] == ["shifter", f"--image={image}", "--module=gpu,nccl-plugin"]
        assert argv[len(argv) - len(server.argv):][:len(programs[config.engine])] == \
            programs[config.engine]
    assert VLLM_IMAGE == "vllm/vllm-openai:v0.32.0"  # the release the local CPU build tests
    assert TEI_IMAGE.endswith(":1.9.3")  # a patch release, not the floating 1.9


def test_shared_qos_packs_two_gpus_per_job(perlmutter_env: Path, tmp_path: Path) -> None:
    launch_plan = plan([Replica("vllm", MODEL, gpus=1)] * 4, site=PERLMUTTER, qos="shared",
                       registry=Registry(tmp_path / "registry"), account="m1234")
    assert [job.gpus for job in launch_plan.jobs] == [2, 2]


def test_tei_gets_the_tei_image_and_no_vllm_caches(perlmutter_env: Path, tmp_path: Path) -> None:
    launch_plan = plan([Replica("tei", "BAAI/bge-m3", gpus=1)], site=PERLMUTTER,
                       registry=Registry(tmp_path / "registry"), account="m1234", check=False)
    body = launch_plan.jobs[0].body
    assert f"--image {TEI_IMAGE}" in body
    assert "VLLM_CACHE_ROOT" not in body and "TVM_FFI" not in body


def test_shared_qos_asks_32_cpus_per_gpu(perlmutter_env: Path, tmp_path: Path) -> None:
    launch_plan = plan([Replica("vllm", MODEL, gpus=1)], site=PERLMUTTER, qos="shared",
                       registry=Registry(tmp_path / "registry"), account="m1234")
    script = render_scripts(launch_plan)
    assert "#SBATCH --exclusive" not in script
    assert "#SBATCH --cpus-per-task=32" in script
    assert "--gpus-per-node 1 -c 32" in script


def test_submit_writes_pending_entries_with_the_job_id(fake_slurm: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_GPUS_PER_NODE", "2")
    registry = Registry(tmp_path / "registry")
    launch_plan = plan([Replica("stub", "m", gpus=1)] * 3, site=SLURM, registry=registry,
                       check=False)
    jobs = submit(launch_plan)
    assert [j.job_id for j in jobs] == ["4242", "4243"]
    assert [len(j.ids) for j in jobs] == [2, 1]
    entries = {e.id: e for e in registry.scan().entries}
    assert set(entries) == {i for j in jobs for i in j.ids}
    for job in jobs:
        for endpoint_id in job.ids:
            entry = entries[endpoint_id]
            assert (entry.state, entry.slurm_job_id, entry.url, entry.model) == (
                "pending", job.job_id, "", "m")
            assert not entry.is_usable() and not entry.is_stale()
            assert stat.S_IMODE(os.stat(registry.entry_path(endpoint_id)).st_mode) == 0o600
    first_script = Path(f"{fake_slurm}.script.1").read_text()
    assert "#SBATCH --gpus-per-node=2" in first_script
    assert "nerschat job-body --sha256 " in first_script and str(jobs[0].script) in first_script
    assert jobs[0].script is not None and "--id " + jobs[0].ids[1] in jobs[0].script.read_text()


def test_submit_failure_is_one_line(fake_slurm: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "sbatch").write_text(
        "#!/bin/bash\necho 'sbatch: error: Invalid account or account/partition combination' >&2\n"
        "exit 1\n")
    launch_plan = plan([Replica("stub", "m")], site=SLURM, registry=Registry(tmp_path / "r"),
                       check=False)
    with pytest.raises(Exception, match="could not submit.*Invalid account") as info:
        submit(launch_plan)
    assert "\n" not in str(info.value)
    assert Registry(tmp_path / "r").scan().entries == []


def squeue_lines(monkeypatch: pytest.MonkeyPatch, *jobs: tuple[str, str, str]) -> None:
    """Make the fake `squeue` show (job id, state, owner) lines in nerschat's format."""
    monkeypatch.setenv("FAKE_SQUEUE_LINES", "\\n".join(
        f"{job}|{state}|2026-12-01T10:00:00|{user}|nerschat.m.1|(null)|Resources"
        for job, state, user in jobs))


def test_cancel_pending_scancels_only_jobs_not_started(fake_slurm: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(tmp_path / "registry")
    jobs = submit(plan([Replica("stub", "m")] * 3, site=SLURM, registry=registry, check=False))
    started = registry.get(jobs[1].ids[0])
    assert started is not None
    started.state = "starting"
    started.url = "http://h:1/v1"
    registry.publish(started)
    me = getpass.getuser()
    # job 0 is queued, job 1 runs its pilot, job 2 has left the queue (cancelled by hand)
    squeue_lines(monkeypatch, (jobs[0].job_id, "PENDING", me), (jobs[1].job_id, "RUNNING", me))
    assert cancel_pending(registry, [e.id for e in registry.scan().entries]) == [jobs[0].job_id]
    assert f"scancel -- {jobs[0].job_id}" in fake_slurm.read_text().splitlines()
    assert [e.id for e in registry.scan().entries] == [started.id]


def test_cancel_pending_never_cancels_another_users_job(fake_slurm: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(tmp_path / "registry")
    (job,) = submit(plan([Replica("stub", "m")], site=SLURM, registry=registry, check=False))
    squeue_lines(monkeypatch, (job.job_id, "PENDING", "somebody-else"))
    with pytest.raises(LaunchError, match=f"job {job.job_id} belongs to somebody-else: not "
                                          "cancelled"):
        cancel_pending(registry, job.ids)
    assert "scancel" not in fake_slurm.read_text()
    assert [e.id for e in registry.scan().entries] == job.ids


def test_unknown_engine_in_a_pack_is_refused_before_submission(fake_slurm: Path,
                                                               tmp_path: Path) -> None:
    with pytest.raises(Exception, match="unknown engine 'foo'"):
        plan([parse_pack("foo:bar")], site=SLURM, registry=Registry(tmp_path / "r"))
    assert "sbatch" not in fake_slurm.read_text()


def test_cli_print_script_and_json(fake_slurm: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NERSCHAT_GPUS_PER_NODE": "2"}
    cmd = [sys.executable, "-m", "nerschat.cli.main", "launch", "--site", SLURM, "--engine",
           "stub", "--model", "m", "--replicas", "2", "--registry", str(tmp_path / "registry"),
           "--no-check"]
    dry = subprocess.run([*cmd, "--print-script"], capture_output=True, text=True, env=env,
                         timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("#SBATCH --job-name=nerschat.m.") == 2
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [j["job_id"] for j in json.loads(out.stdout)] == ["4242", "4243"]


def test_forget_gone_removes_pending_entries_of_jobs_no_longer_queued(
        fake_slurm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(tmp_path / "registry")
    jobs = submit(plan([Replica("stub", "m")] * 2, site=SLURM, registry=registry, check=False))
    squeue_lines(monkeypatch, (jobs[1].job_id, "PENDING", getpass.getuser()))
    assert forget_gone(registry) == jobs[0].ids
    assert [e.id for e in registry.scan().entries] == jobs[1].ids


def test_a_packed_job_gets_the_environment_of_every_engine() -> None:
    tei = Site(name="s", hf_home="/h", env={"A": "1"})
    vllm = Site(name="s", hf_home="/h", env={"TVM_FFI_CACHE_DIR": "/c"}, compile_cache="/v")
    merged = merge_sites([tei, vllm])
    assert merged.environment() == {"HF_HOME": "/h", "HF_HUB_OFFLINE": "1", "A": "1",
                                    "TVM_FFI_CACHE_DIR": "/c"}
    assert merged.compile_cache == "/v"


def test_default_site(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from nerschat.parsl.launch import default_site

    monkeypatch.setenv("NERSC_HOST", "perlmutter")
    assert default_site() == "perlmutter"
    monkeypatch.delenv("NERSC_HOST")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert default_site() == "local"
    (tmp_path / "sbatch").write_text("#!/bin/sh\n")
    (tmp_path / "sbatch").chmod(0o755)
    assert default_site() == "slurm"


def test_phase_names_the_pending_reason(fake_slurm: Path, tmp_path: Path) -> None:
    (tmp_path / "bin" / "squeue").write_text(
        "#!/bin/bash\necho 'PENDING|Priority|2026-12-01T10:00:00'\n")
    jobs = submit(plan([Replica("stub", "m")], site=SLURM, registry=Registry(tmp_path / "r"),
                       check=False))
    assert jobs[0].phase() == "PENDING (Priority), expected start 2026-12-01T10:00:00"
    with pytest.raises(Exception, match=r"job 4242 \(PENDING \(Priority\).*0 of 1 pilots ready"):
        jobs[0].wait_ready(timeout=0.1, poll=0.05)
