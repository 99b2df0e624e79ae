from __future__ import annotations

from pathlib import Path

import pytest

from nerschat.parsl.config import ConfigError, load_config_module, pilot_options_of

CONFIGS = Path(__file__).resolve().parents[3] / "parsl_configs"


def test_local_config_has_both_labels() -> None:
    module = load_config_module(CONFIGS / "local.py")
    config = module.make_config(run_dir="/tmp/unused")
    assert [e.label for e in config.executors] == ["pilots", "clients"]
    assert pilot_options_of(module) == {"runtime": "none"}


def test_perlmutter_config_requires_account_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NERSCHAT_ACCOUNT", raising=False)
    monkeypatch.delenv("NERSCHAT_ENV", raising=False)
    module = load_config_module(CONFIGS / "perlmutter.py")
    with pytest.raises(ConfigError, match=r"account is required: pass account=\.\.\. or set \$NERSCHAT_ACCOUNT"):
        module.make_config()
    with pytest.raises(ConfigError, match=r"env_path is required.*\$NERSCHAT_ENV"):
        module.make_config(account="m1234")
    options = module.pilot_options("tei")
    assert options["runtime"] == "shifter" and "text-embeddings-inference" in options["image"]


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config_module(CONFIGS / "nope.py")
