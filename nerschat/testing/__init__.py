"""Test helpers users can import too: the stub engine's fleet and a polling helper."""

from nerschat.testing.fleet import PilotProcess, StubFleet, server_counters, stub_fleet, wait_until

__all__ = ["PilotProcess", "StubFleet", "server_counters", "stub_fleet", "wait_until"]
