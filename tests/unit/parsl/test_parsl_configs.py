from __future__ import annotations

from pathlib import Path

import pytest
from parsl.providers import SlurmProvider

from nerschat.parsl.config import (
    ConfigError,
    JobRequest,
    Site,
    load_config_module,
    load_site,
    pilot_options_of,
    pilot_provider_of,
    site_of,
    walltime_seconds,
)

CONFIGS = Path(__file__).resolve().parents[3] / "parsl_configs"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NERSCHAT_ACCOUNT", "NERSCHAT_ENV", "NERSCHAT_QOS", "NERSCHAT_WALLTIME",
                 "NERSCHAT_RUNTIME", "NERSCHAT_GPUS_PER_NODE", "HF_HOME"):
        monkeypatch.delenv(name, raising=False)


def test_local_config_has_both_labels() -> None:
    module = load_site("local")
    config = module.make_config(run_dir="/tmp/unused")
    assert [e.label for e in config.executors] == ["pilots", "clients"]
    assert pilot_options_of(module) == {"runtime": "none"}


@pytest.mark.parametrize("name", ["local", "slurm", "perlmutter"])
def test_every_config_gives_site_facts_without_images(name: str) -> None:
    module = load_site(name)
    for engine in ("vllm", "tei", "stub"):
        site = site_of(module, engine)
        assert isinstance(site, Site)
        assert "image" not in pilot_options_of(module, engine)
    assert callable(module.pilot_provider)


def test_perlmutter_config_requires_account_and_env() -> None:
    module = load_site("perlmutter")
    with pytest.raises(ConfigError, match=r"account is required: pass account=\.\.\. or set \$NERSCHAT_ACCOUNT"):
        module.make_config()
    with pytest.raises(ConfigError, match=r"env_path is required.*\$NERSCHAT_ENV"):
        module.make_config(account="m1234")


def test_perlmutter_site_facts(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_site("perlmutter")
    vllm, tei = site_of(module, "vllm"), site_of(module, "tei")
    assert (vllm.runtime, vllm.modules, vllm.gpus_per_node) == ("shifter", ("gpu", "nccl-plugin"), 4)
    assert vllm.hf_home == "$SCRATCH/huggingface" and vllm.offline
    assert vllm.environment()["TVM_FFI_CACHE_DIR"] == "$SCRATCH/cache_tvm_ffi"
    assert vllm.compile_cache == "$SCRATCH/cache_vllm" and tei.compile_cache is None
    monkeypatch.setenv("SCRATCH", "/pscratch/sd/u/user")
    assert pilot_options_of(module, "tei") == {
        "runtime": "shifter", "runtime_modules": ("gpu", "nccl-plugin"),
        "options": {"hf_cache": "/pscratch/sd/u/user/huggingface"}}


def test_perlmutter_workflow_config_matches_the_site(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_site("perlmutter")
    monkeypatch.setattr(module, "address_by_interface", lambda name: "10.0.0.1")
    monkeypatch.setattr(SlurmProvider, "execute_wait", lambda self, cmd, timeout=None: (1, "", ""))
    config = module.make_config(account="m1234", env_path="/global/common/software/m1234/env")
    pilots, clients = config.executors
    assert pilots.provider.cmd_timeout == clients.provider.cmd_timeout == 120
    assert pilots.provider.gpus_per_node == 4
    assert "-c 128" in pilots.provider.launcher.overrides
    assert clients.provider.launcher.overrides == "-c 256"  # else all workers share one CPU
    assert clients.provider.init_blocks == 0  # no CPU node billed while pilots queue
    assert "exit 1" in pilots.provider.worker_init  # no silent wrong Python
    assert "conda activate" not in pilots.provider.worker_init
    for cache in ('HF_HOME="$SCRATCH/huggingface"', "$SCRATCH/cache_vllm",
                  'TVM_FFI_CACHE_DIR="$SCRATCH/cache_tvm_ffi"'):
        assert cache in pilots.provider.worker_init  # $HOME has a 40 GB quota


def test_pilot_provider_of_slurm_site(monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_site("slurm")
    monkeypatch.setattr(SlurmProvider, "execute_wait", lambda self, cmd, timeout=None: (1, "", ""))
    monkeypatch.setenv("NERSCHAT_ACCOUNT", "acct")
    provider = pilot_provider_of(module, JobRequest(gpus=2, walltime="00:10:00"))
    assert isinstance(provider, SlurmProvider)
    assert (provider.account, provider.gpus_per_node, provider.walltime) == ("acct", 2, "00:10:00")
    assert provider.cmd_timeout == 120


def test_renamed_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NERSCHAT_SLURM_GPUS_PER_NODE", "2")
    module = load_site("slurm")
    with pytest.raises(ConfigError, match=r"\$NERSCHAT_SLURM_GPUS_PER_NODE is no longer read: "
                                          r"rename it to \$NERSCHAT_GPUS_PER_NODE"):
        module.make_config()


def test_walltime_seconds() -> None:
    assert walltime_seconds("01:30:00") == 5400
    assert walltime_seconds("1-00:00:00") == 86400
    assert walltime_seconds("90") == 5400  # SLURM's minutes
    assert walltime_seconds("1:2") == 62  # SLURM's MM:SS
    for bad, reason in (("00:61:00", "below 60"), ("", "is not a SLURM time"),
                        ("1:2:3:4", "is not a SLURM time")):
        with pytest.raises(ConfigError, match=reason):
            walltime_seconds(bad)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config_module(CONFIGS / "nope.py")


@pytest.mark.parametrize("name", ["local", "slurm", "perlmutter"])
def test_parsl_configs_files_are_the_packaged_sites(name: str) -> None:
    packaged = load_site(name)
    copy = load_config_module(CONFIGS / f"{name}.py")  # what `--site parsl_configs/X.py` loads
    for function in ("make_config", "site", "pilot_provider"):
        assert getattr(copy, function) is getattr(packaged, function)
    assert load_site(str(CONFIGS / f"{name}.py")).site is packaged.site


def test_unknown_site_name_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown site 'mars': choose perlmutter, slurm, local "
                                          r"or pass the path"):
        load_site("mars")
