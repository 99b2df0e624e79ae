from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def allow_test_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mock endpoints live on `*.test` hosts: not cluster hosts by the default rule."""
    monkeypatch.setenv("NERSCHAT_ALLOWED_HOSTS", "*.test")
