from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.registry import Endpoint, Registry
from nerschat.testing.fleet import StubFleet

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Groups for `pytest -n 2 --dist loadgroup` (scripts/test.sh): the integration tests share
    one local SLURM cluster (4 fake GPUs) and time their faults, so they run one at a time in
    one worker ("cluster"); the real-vLLM tests share one pair of pilots per worker, so they
    all run in one worker too ("engine"), beside the cluster scenarios; unit tests go wherever
    a worker is free. Without xdist the groups are inert."""
    for item in items:
        if INTEGRATION not in Path(str(item.path)).parents:
            continue
        group = "engine" if item.get_closest_marker("engine") else "cluster"
        item.add_marker(pytest.mark.xdist_group(group))


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
