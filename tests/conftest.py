from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nerschat.registry import Endpoint, Registry
from nerschat.testing.fleet import StubFleet

# The modules whose tests use the real vLLM engine (marker `engine`); checked at collection.
ENGINE_MODULES = ("test_judging_real_engine.py", "test_real_engine.py")


def worker_group(nodeid: str) -> str | None:
    """The pytest-xdist group of a test (scripts/test.sh runs `-n 2 --dist loadgroup`).

    The integration scenarios share one local SLURM cluster (4 fake GPUs) and time their
    faults, so they all run one at a time in one worker ("cluster"); the real-vLLM tests share
    one pair of pilots per worker process, so they run together in the other ("engine"); unit
    tests (None) go to whichever worker is free.
    """
    path = nodeid.split("::", 1)[0]
    if not path.startswith("tests/integration/"):
        return None
    return "engine" if path.rsplit("/", 1)[-1] in ENGINE_MODULES else "cluster"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` by `worker_group` (xdist's own reads `xdist_group` marks through the
    node ids, which pytest 9.2 no longer lets it change: pytest-xdist issue #1386)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return worker_group(nodeid) or nodeid

    return GroupScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("engine") and worker_group(item.nodeid) != "engine":
            raise pytest.UsageError(f"{item.nodeid} uses the real engine: add its module to "
                                    "ENGINE_MODULES in tests/conftest.py")


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
