from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.registry import Endpoint, Registry
from nerschat.testing.fleet import StubFleet


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry")
    reg.ensure()
    return reg


@pytest.fixture
def fleet(registry: Registry) -> Iterator[StubFleet]:
    stubs = StubFleet(registry)
    try:
        yield stubs
    finally:
        stubs.stop_all()


def make_endpoint(**changes: object) -> Endpoint:
    now = time.time()
    fields: dict[str, object] = dict(
        id="e1", kind="llm", engine="stub", model="m1", url="http://127.0.0.1:9/v1",
        state="ready", api_key="secret", pid=1, host="127.0.0.1", slurm_job_id=None,
        heartbeat_at=now, ttl=30.0, started_at=now,
    )
    fields.update(changes)
    return Endpoint(**fields)  # type: ignore[arg-type]
