"""Pilot decisions that need no server: drain budgets, stop reasons, configuration checks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from nerschat.pilot.pilot import Pilot, PilotConfig, StopSignal
from nerschat.registry import Registry
from tests.conftest import make_endpoint


def pilot_expiring_in(seconds: float | None, tmp_path: Path, **config: object) -> Pilot:
    pilot = Pilot(PilotConfig(engine="stub", model="m1", **config),  # type: ignore[arg-type]
                  Registry(tmp_path / "registry"))
    pilot.endpoint = make_endpoint(
        expires_at=None if seconds is None else time.time() + seconds)
    return pilot


def test_stop_or_signal_drain_waits_the_grace_period(tmp_path: Path) -> None:
    pilot = pilot_expiring_in(None, tmp_path, grace_period=60, stop_timeout=15)
    assert pilot._drain_budget() == 60


def test_walltime_drain_uses_the_time_left_minus_stop_timeout_and_margin(tmp_path: Path) -> None:
    pilot = pilot_expiring_in(120, tmp_path, grace_period=10, stop_timeout=15)
    pilot.stop.set("walltime ends in 120 s", walltime=True)
    assert 99 <= pilot._drain_budget() <= 100  # 120 - 15 - 5, not the 10 s grace period


def test_no_drain_may_outlast_the_walltime(tmp_path: Path) -> None:
    pilot = pilot_expiring_in(40, tmp_path, grace_period=60, stop_timeout=15)
    assert 19 <= pilot._drain_budget() <= 20  # SIGTERM 40 s before the end: 20 s, not 60
    late = pilot_expiring_in(5, tmp_path, grace_period=60, stop_timeout=15)
    assert late._drain_budget() == 0


def test_first_stop_reason_wins_and_later_ones_only_wake() -> None:
    stop = StopSignal()
    stop.set("SIGTERM")
    stop.set("walltime ends in 3 s", walltime=True)
    assert (stop.reason, stop.walltime, stop.event.is_set()) == ("SIGTERM", False, True)


@pytest.mark.parametrize("field, value", [("ttl", 0), ("grace_period", -1),
                                          ("health_failures", 0), ("max_restarts", -1),
                                          ("port", 70000)])
def test_bad_settings_are_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        PilotConfig(engine="stub", model="m1", **{field: value})  # type: ignore[arg-type]


def test_a_pilot_that_gives_up_writes_why_before_its_entry_goes(tmp_path: Path) -> None:
    """Whoever sees the entry removed (the pool controller) must find the reason in the log."""
    from nerschat.pilot.pilot import PilotError
    from nerschat.pool.state import exit_reason

    pilot = pilot_expiring_in(None, tmp_path, max_restarts=0)
    registry = pilot.registry
    registry.publish(pilot._entry)
    pilot.log_path = registry.log_dir / f"{pilot._entry.id}.log"
    seen: list[str | None] = []
    remove = registry.remove

    def remove_and_look(endpoint_id: str) -> None:
        seen.append(exit_reason(registry, endpoint_id))
        remove(endpoint_id)

    registry.remove = remove_and_look  # type: ignore[method-assign]
    with pytest.raises(PilotError, match="server exited with status -9"):
        pilot._restart_or_fail("server exited with status -9", [])
    assert seen == ["server exited with status -9"]
    assert registry.get(pilot._entry.id) is None
