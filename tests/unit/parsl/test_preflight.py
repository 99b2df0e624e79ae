"""Each pre-flight check of `nerschat launch` fails with its one-line fix, before queuing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nerschat.errors import UsageError
from nerschat.parsl import preflight
from nerschat.parsl.config import Site
from nerschat.parsl.launch import Replica, plan
from nerschat.pilot.engines.vllm import VLLM_IMAGE
from nerschat.registry import Registry
from tests.fakes import slurm_commands

REPO = Path(__file__).resolve().parents[3]
PERLMUTTER = "perlmutter"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
CLUSTER = Site(name="perlmutter", runtime="shifter", gpus_per_node=4, cluster=True)


@pytest.fixture
def login_node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Fake sbatch/sacct/shifterimg on PATH, weights cached, images pulled, a shared registry."""
    for name, value in slurm_commands.install(tmp_path / "bin", tmp_path / "calls.log").items():
        monkeypatch.setenv(name, value)
    for name in ("NERSCHAT_ACCOUNT", "NERSCHAT_QOS", "NERSCHAT_WALLTIME", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)
    snapshot = (tmp_path / "scratch" / "huggingface" / "hub"
                / f"models--{MODEL.replace('/', '--')}" / "snapshots" / "abc")
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setenv("SCRATCH", str(tmp_path / "scratch"))
    env = tmp_path / "common" / "nerschat-env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "nerschat").touch()
    monkeypatch.setenv("NERSCHAT_ENV", str(env))
    monkeypatch.setenv("FAKE_SHIFTER_IMAGES", VLLM_IMAGE)
    monkeypatch.setattr(preflight, "NODE_LOCAL_PREFIXES", ())
    monkeypatch.setattr(preflight, "NODE_LOCAL_FS_TYPES", ())
    return tmp_path / "home" / "registry"


def launch_plan(registry: Path, replica: Replica | None = None, **kwargs: object) -> object:
    """A checked plan for one replica (default: one-GPU vLLM) on the Perlmutter config."""
    options: dict[str, object] = {"account": "m1234", **kwargs}
    return plan([replica or Replica("vllm", MODEL, gpus=1)], site=PERLMUTTER,
                registry=Registry(registry), **options)  # type: ignore[arg-type]


def one_line_error(registry: Path, match: str, replica: Replica | None = None,
                   **kwargs: object) -> str:
    with pytest.raises(UsageError, match=match) as info:
        launch_plan(registry, replica, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_all_checks_pass_on_a_prepared_login_node(login_node: Path) -> None:
    launch_plan(login_node)


def test_image_not_pulled(login_node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SHIFTER_IMAGES", "ubuntu:latest")
    message = one_line_error(login_node, "not pulled for Shifter")
    assert f"`shifterimg pull {VLLM_IMAGE}`" in message


def test_image_given_by_the_user_is_the_one_checked(login_node: Path) -> None:
    one_line_error(login_node, "shifterimg pull vllm/vllm-openai:nightly",
                   Replica("vllm", MODEL, gpus=1, image="vllm/vllm-openai:nightly"))


def test_weights_not_cached(login_node: Path) -> None:
    message = one_line_error(login_node, "weights of org/other are not in",
                             Replica("vllm", "org/other", gpus=1))
    assert "`nerschat prefetch org/other --hf-home " in message


def test_registry_on_tmp_refused_for_a_cluster_site(login_node: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "NODE_LOCAL_PREFIXES", ("/tmp",))
    message = one_line_error(Path("/tmp/reg"), "registry /tmp/reg is on a node-local")
    assert "--registry" in message


def test_registry_on_tmp_is_fine_for_the_local_site(tmp_path: Path) -> None:
    preflight.check_registry_shared(Path("/tmp/reg"), Site(name="local", cluster=False))


def test_nerschat_not_installed_in_the_job_env(login_node: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_ENV", str(tmp_path / "empty-env"))
    one_line_error(login_node, "NERSCHAT_ENV .*empty-env has no bin/nerschat")


def test_tei_with_two_gpus(login_node: Path) -> None:
    one_line_error(login_node, "TEI serves one model on one GPU.*--gpus-per-replica 1",
                   Replica("tei", "BAAI/bge-m3", gpus=2))


def test_more_gpus_than_a_node_has(login_node: Path) -> None:
    one_line_error(login_node, "8 GPUs per replica do not fit a perlmutter node",
                   Replica("vllm", MODEL, gpus=8))


def test_no_account(login_node: Path) -> None:
    with pytest.raises(UsageError, match=r"account is required.*\$NERSCHAT_ACCOUNT"):
        plan([Replica("vllm", MODEL, gpus=1)], site=PERLMUTTER, registry=Registry(login_node))


def test_old_variable_names_are_refused(login_node: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_SLURM_ACCOUNT", "m1234")
    one_line_error(login_node, r"\$NERSCHAT_SLURM_ACCOUNT is no longer read.*\$NERSCHAT_ACCOUNT")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"walltime": "90:75"}, "walltime '90:75': minutes and seconds must be below 60"),
    ({"walltime": "00:01:00"}, "not longer than the drain margin"),
    ({"qos": "normal"}, "not a Perlmutter QOS"),
    ({"qos": "debug", "walltime": "01:00:00"}, "debug QOS allows at most 00:30:00"),
])
def test_walltime_and_qos(login_node: Path, kwargs: dict[str, str], match: str) -> None:
    one_line_error(login_node, match, None, **kwargs)


def test_shared_qos_takes_at_most_two_gpus(login_node: Path) -> None:
    one_line_error(login_node, "shared QOS gives at most 2 GPUs",
                   Replica("vllm", MODEL, gpus=4), qos="shared")


def test_no_check_skips_the_environment_checks(login_node: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_SHIFTER_IMAGES", "")
    launch_plan(login_node, Replica("vllm", "org/not-cached", gpus=1), check=False)


def test_normalize_image() -> None:
    assert preflight.normalize_image("docker:ubuntu") == "ubuntu:latest"
    assert preflight.normalize_image("docker.io/library/ubuntu:22.04") == "ubuntu:22.04"
    assert preflight.normalize_image(VLLM_IMAGE) == VLLM_IMAGE


def test_prefetch_fills_the_cache_the_check_reads(login_node: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`nerschat prefetch` (with the Hub faked) leaves the weights where the check finds them."""
    import sys
    import types

    from nerschat.parsl.prefetch import IGNORED, prefetch

    calls: list[dict[str, object]] = []

    def snapshot_download(repo_id: str, revision: str | None, cache_dir: str,
                          ignore_patterns: list[str] | None) -> str:
        calls.append({"repo_id": repo_id, "cache_dir": cache_dir, "ignore": ignore_patterns})
        snap = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "r1"
        snap.mkdir(parents=True)
        (snap / "config.json").write_text("{}")
        return str(snap)

    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(snapshot_download=snapshot_download))
    hf_home = tmp_path / "scratch" / "huggingface"
    one_line_error(login_node, "weights of org/new are not in", Replica("vllm", "org/new", gpus=1))
    prefetch("org/new", hf_home)
    assert calls == [{"repo_id": "org/new", "cache_dir": str(hf_home / "hub"), "ignore": IGNORED}]
    launch_plan(login_node, Replica("vllm", "org/new", gpus=1))


def test_podman_hpc_image_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "podman-hpc"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho docker.io/vllm/vllm-openai:v0.32.0\necho localhost/x:1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{Path('/usr/bin')}:{Path('/bin')}")
    preflight.check_image("podman-hpc", "vllm/vllm-openai:v0.32.0")
    with pytest.raises(UsageError, match="`podman-hpc pull ghcr.io/o/tei:1.9.3`"):
        preflight.check_image("podman-hpc", "ghcr.io/o/tei:1.9.3")


def test_apptainer_sif_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="Apptainer image .*vllm.sif not found"):
        preflight.check_image("apptainer", str(tmp_path / "vllm.sif"))
    (tmp_path / "vllm.sif").touch()
    preflight.check_image("apptainer", str(tmp_path / "vllm.sif"))
    preflight.check_image("apptainer", "vllm/vllm-openai:v0.32.0")  # pulled by apptainer itself


def test_prefetch_command_gets_weights_and_pulls_the_pinned_image(
        login_node: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One command on the login node leaves both the weights and the image where the
    pre-flight checks of `nerschat launch --site perlmutter` look for them."""
    import sys
    import types

    from click.testing import CliRunner

    from nerschat.cli.launch import prefetch

    def snapshot_download(repo_id: str, revision: str | None, cache_dir: str,
                          ignore_patterns: list[str] | None) -> str:
        snap = Path(cache_dir) / f"models--{repo_id.replace('/', '--')}" / "snapshots" / "r1"
        snap.mkdir(parents=True, exist_ok=True)
        (snap / "config.json").write_text("{}")
        return str(snap)

    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(snapshot_download=snapshot_download))
    monkeypatch.setenv("FAKE_SHIFTER_IMAGES", "")  # nothing pulled yet
    result = CliRunner().invoke(prefetch, ["org/new", "--site", "perlmutter"])
    assert result.exit_code == 0, result.output
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert f"shifterimg pull {VLLM_IMAGE}" in calls
    monkeypatch.setenv("FAKE_SHIFTER_IMAGES", VLLM_IMAGE)  # what the pull left behind
    launch_plan(login_node, Replica("vllm", "org/new", gpus=1))
    again = CliRunner().invoke(prefetch, ["org/new", "--site", "perlmutter"])
    assert again.exit_code == 0 and "already pulled" in again.output
    assert calls.count(f"shifterimg pull {VLLM_IMAGE}") == 1
