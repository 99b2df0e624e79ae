"""The pool controller against a fake scheduler and fake pilots, on a fake clock."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nerschat.errors import UsageError
from nerschat.pool import Member, Pool, Timing
from nerschat.pool import state as store
from nerschat.pool.backend import JobInfo
from nerschat.pool.controller import SUBMIT_GRACE
from nerschat.pool.progress import WorkflowReporter, remaining
from nerschat.registry import Endpoint, Registry
from nerschat.testing.metrics_page import MetricsPage


@dataclass
class Clock:
    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeCluster:
    """Jobs that run when told to; pilots that publish entries and honour stop requests."""

    registry: Registry
    clock: Clock
    gpus: int = 1
    jobs: dict[str, JobInfo] = field(default_factory=dict)
    by_member: dict[str, str] = field(default_factory=dict)
    cancelled: list[str] = field(default_factory=list)
    counter: int = 0
    queue_down: bool = False

    def submit(self) -> Member:
        self.counter += 1
        job, member_id = str(100 + self.counter), f"m.{self.counter}"
        self.jobs[job] = JobInfo("PENDING", None, None)
        self.by_member[member_id] = job
        self.registry.publish(self._entry(member_id, job, "pending"))
        return Member(member_id, job, True, self.clock(), gpus=self.gpus)

    def queue(self, job_ids: Sequence[str]) -> dict[str, JobInfo] | None:
        if self.queue_down:
            return None
        return {j: self.jobs[j] for j in job_ids if j in self.jobs}

    def cancel(self, member: Member) -> None:
        self.cancelled.append(member.job_id)
        self.jobs.pop(member.job_id, None)
        self.registry.remove(member.id)

    def _entry(self, member_id: str, job: str, state: str, expires: float | None = None
               ) -> Endpoint:
        now = self.clock()
        return Endpoint(id=member_id, kind="llm", engine="stub", model="m",
                        url="" if state == "pending" else f"http://h:1/{member_id}/v1",
                        state=state, api_key=None, pid=1, host="h",  # type: ignore[arg-type]
                        slurm_job_id=job, heartbeat_at=now, ttl=7 * 86400.0, expires_at=expires,
                        started_at=now, ready_at=now if state == "ready" else None)

    def run(self, member_id: str, walltime: float) -> None:
        """The member's job starts and its pilot is ready at once."""
        job = self.by_member[member_id]
        now = self.clock()
        self.jobs[job] = JobInfo("RUNNING", now, now + walltime)
        self.registry.publish(self._entry(member_id, job, "ready", now + walltime))

    def honour_stops(self) -> list[str]:
        """Pilots asked to drain leave (entry removed, job ended)."""
        left = []
        for member_id, job in self.by_member.items():
            if self.registry.stop_requested(member_id) and job in self.jobs:
                self.registry.remove(member_id)
                del self.jobs[job]
                left.append(member_id)
        return left

    def set_state(self, member_id: str, state: str, restarts: int = 0) -> None:
        """The member's pilot rewrites its entry (`restarts`: engine restarts so far)."""
        entry = self.registry.get(member_id)
        assert entry is not None
        entry.state = state  # type: ignore[assignment]
        entry.heartbeat_at = self.clock()
        if restarts:
            entry.extra["restarts"] = restarts
        self.registry.publish(entry)

    def kill(self, member_id: str) -> None:
        """scancel: the job and its pilot's entry disappear."""
        self.jobs.pop(self.by_member[member_id], None)
        self.registry.remove(member_id)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Pool, FakeCluster, Clock]:
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    pool = Pool("stub", "m", 2, registry=registry, backend=cluster, clock=clock,
                timing=Timing(lead_floor=20, overlap=5), drain_before=10, pool_id="p1")
    return pool, cluster, clock


def ready_serving(pool: Pool) -> int:
    return sum(1 for m in pool.state.members if m.phase == "ready" and m.drain_at is None)


def test_submits_the_replicas_and_learns_the_lead_time(setup: tuple[Pool, FakeCluster, Clock]
                                                       ) -> None:
    pool, cluster, clock = setup
    assert pool.step()
    assert [m.phase for m in pool.state.members] == ["pending", "pending"]
    clock.now += 30
    for member in pool.state.members:
        cluster.run(member.id, 600)
    pool.step()
    assert ready_serving(pool) == 2
    assert pool.state.lead_samples == [30.0, 30.0]
    assert pool.lead_time() == 45.0  # 1.5 x the longest sample, above the floor of 20
    assert len(pool.state.members) == 2  # nothing more while nobody is due


def test_hands_over_before_the_walltime_without_dropping_below_desired(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    clock.now += 2
    for member in pool.state.members:
        cluster.run(member.id, 120)
    pool.step()
    first = [m.id for m in pool.state.members]
    lowest = 2
    # Lead time 20 (floor; samples of 2 s): due when 10 + 20 + 5 = 35 s are left, at 85 s.
    for _ in range(120):
        clock.now += 1
        started = [m for m in pool.state.members if m.phase == "pending"
                   and clock.now - m.submitted_at >= 8]
        for member in started:
            cluster.run(member.id, 120)
        cluster.honour_stops()
        pool.step()
        lowest = min(lowest, ready_serving(pool))
    assert lowest == 2
    assert len(pool.state.members) >= 4
    olds = {h.old for h in pool.state.handovers}
    assert olds == set(first)
    for handover in pool.state.handovers:
        assert handover.overlap_s >= 5
        assert handover.old_time_left_s is not None and handover.old_time_left_s > 10
    assert pool.state.replaced_losses == 0
    assert all(m.reason == "handed over" for m in pool.state.members if m.id in first)


def test_replaces_a_member_lost_to_scancel(setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    for member in pool.state.members:
        cluster.run(member.id, 3600)
    clock.now += 1
    pool.step()
    victim = pool.state.members[0]
    cluster.kill(victim.id)
    clock.now += 1
    pool.step()
    assert victim.phase == "gone" and victim.reason.startswith("lost")
    assert victim.ended_at == clock.now
    assert pool.state.replaced_losses == 1
    assert len(pool.state.live_members()) == 2
    assert pool.state.members[-1].phase == "pending"


def test_a_stale_member_is_cancelled_removed_and_replaced(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    for member in pool.state.members:
        cluster.run(member.id, 3600)
    pool.step()
    victim = pool.state.members[1]
    entry = pool.registry.get(victim.id)
    assert entry is not None
    entry.ttl, entry.heartbeat_at = 5, time.time() - 10  # a frozen pilot
    pool.registry.publish(entry)
    path = pool.registry.entry_path(victim.id)
    os.utime(path, (entry.heartbeat_at, entry.heartbeat_at))  # staleness goes by the file too
    clock.now += 10
    pool.step()
    assert victim.phase == "gone" and "stale" in victim.reason
    assert cluster.cancelled == [victim.job_id]
    assert pool.registry.get(victim.id) is None
    assert len(pool.state.live_members()) == 2


def test_an_unanswering_queue_is_not_a_loss(setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    cluster.queue_down = True
    clock.now += 100
    pool.step()
    assert [m.phase for m in pool.state.members] == ["pending", "pending"]
    assert pool.state.replaced_losses == 0


def test_stop_from_another_process_cancels_queued_and_drains_ready(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    cluster.run(pool.state.members[0].id, 3600)
    pool.step()
    store.request_stop(Registry(pool.registry.path), "p1")
    assert pool.step()  # the ready one is draining
    assert cluster.cancelled == [pool.state.members[1].job_id]
    assert pool.registry.stop_requested(pool.state.members[0].id)
    cluster.honour_stops()
    assert not pool.step()
    final = store.read_state(Registry(pool.registry.path), "p1")
    assert final.status == "stopped"
    assert {m.reason for m in final.members} == {"pool stopped"}
    assert not store.stop_requested(pool.registry, "p1")


def test_duration_ends_the_pool(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    pool = Pool("stub", "m", 1, registry=registry, backend=cluster, clock=clock, duration=60,
                timing=Timing(lead_floor=20, overlap=5), drain_before=10)
    pool.step()
    cluster.run(pool.state.members[0].id, 3600)
    clock.now += 61
    pool.step()
    assert pool.state.status == "stopping"
    cluster.honour_stops()
    assert not pool.step()


def test_a_member_outlasting_the_pool_is_not_replaced(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    pool = Pool("stub", "m", 1, registry=registry, backend=cluster, clock=clock, duration=100,
                timing=Timing(lead_floor=20, overlap=5), drain_before=10)
    pool.step()
    cluster.run(pool.state.members[0].id, 200)
    clock.now += 150  # 50 s of walltime left, but the pool ends first
    pool.step()
    assert len(pool.state.members) == 1


def test_elastic_scales_up_on_backlog_and_down_when_idle(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    backlog = {"waiting": 0.0, "running": 0.0}
    pool = Pool("stub", "m", (1, 3), registry=registry, backend=cluster, clock=clock,
                metrics=lambda e: (backlog["waiting"], backlog["running"]),
                timing=Timing(lead_floor=20, overlap=5, metrics_period=0, idle_after=30,
                              scale_up_waiting=4), drain_before=10)
    pool.step()
    cluster.run(pool.state.members[0].id, 3600)
    pool.step()
    backlog["waiting"] = 10
    clock.now += 1
    pool.step()
    assert pool.state.desired == 2 and len(pool.state.live_members()) == 2
    cluster.run(pool.state.members[1].id, 3600)
    backlog.update(waiting=0, running=0)
    for _ in range(40):
        clock.now += 1
        cluster.honour_stops()
        pool.step()
    assert pool.state.desired == 1
    assert len(pool.state.live_members()) == 1
    assert [m.reason for m in pool.state.members if not m.live] == ["scaled down"]


@pytest.mark.parametrize("names", [{"waiting": "te_queue_size"}, None],
                         ids=["tei-named", "unnamed"])
def test_elastic_scales_up_on_the_waiting_gauge_its_entries_name(
        tmp_path: Path, names: dict[str, str] | None) -> None:
    """The default metrics reader: the queue the entry names, read from its metrics_url."""
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    pool = Pool("stub", "m", (1, 3), registry=registry, backend=cluster, clock=clock,
                timing=Timing(lead_floor=20, overlap=5, metrics_period=0,
                              scale_up_waiting=4), drain_before=10)
    with MetricsPage("te_queue_size 0\n") as page:
        pool.step()
        member = pool.state.members[0].id
        cluster.run(member, 3600)
        entry = registry.get(member)
        assert entry is not None
        entry.metrics_url, entry.load_metrics = page.url, names
        registry.publish(entry)
        pool.step()
        assert pool.state.desired == 1
        page.text = 'vllm:num_requests_waiting{model_name="m"} 50\nte_queue_size 10\n'
        clock.now += 1
        pool.step()
    assert pool.state.desired == (2 if names else 1)  # no names: nothing guessed


def test_bad_replicas_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        Pool("stub", "m", (3, 2), registry=Registry(tmp_path))
    with pytest.raises(UsageError):
        Pool("stub", "m", 0, registry=Registry(tmp_path))


def test_a_new_controller_adopts_the_members_of_a_dead_one(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    for member in pool.state.members:
        cluster.run(member.id, 3600)
    pool.step()
    clock.now += 60  # the first controller is gone
    second = Pool.resume(pool.registry, "p1", backend=cluster, clock=clock)
    assert second.spec.drain_before == 10 and second.timing.overlap == 5
    assert second.step()
    assert [m.id for m in second.state.members] == [m.id for m in pool.state.members]
    assert [m.phase for m in second.state.members] == ["ready", "ready"]
    assert "controller resumed" in second.state.events[-1]
    store.request_stop(pool.registry, "p1")
    second.step()
    cluster.honour_stops()
    assert not second.step()
    assert not Pool.resume(pool.registry, "p1", backend=cluster, clock=clock).step()


def test_members_dying_before_ready_back_off_then_the_pool_gives_up(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    submitted_at: list[float] = []
    for _ in range(400):
        pool.step()
        for member in pool.state.live_members():
            if member.submitted_at not in submitted_at:
                submitted_at.append(member.submitted_at)
            if member.phase == "pending" and clock.now - member.submitted_at >= 2:
                cluster.kill(member.id)  # the engine fails at start-up, every time
        clock.now += 1
        if pool.state.status != "running":
            break
    assert pool.state.status in ("stopping", "stopped")
    assert "never became ready" in pool.state.error
    assert len(pool.state.members) < 10  # backed off instead of submitting every second
    with pytest.raises(Exception, match="never became ready"):
        pool.wait_ready(timeout=0)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_resume_refuses_a_state_file_of_another_user(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    pool.step()
    os.chown(store.state_path(pool.registry, "p1"), 65534, -1)
    # A private registry does not even read it; a team registry reads it but never resumes it.
    with pytest.raises(UsageError, match="owned by user nobody"):
        Pool.resume(pool.registry, "p1", backend=cluster, clock=clock)
    os.chown(store.state_path(pool.registry, "p1"), 65534, 4242)
    for path in (pool.registry.path, pool.registry.path / "pools"):
        os.chown(path, -1, 4242)
        os.chmod(path, 0o2770)
    with pytest.raises(UsageError, match="not to you"):
        Pool.resume(pool.registry, "p1", backend=cluster, clock=clock)


def test_queued_jobs_cancelled_by_someone_else_are_resubmitted_at_once(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    pool, cluster, clock = setup
    for _ in range(3):
        pool.step()
        clock.now += SUBMIT_GRACE + 1
        for member in pool.state.live_members():
            del cluster.jobs[member.job_id]  # scancel of a queued job: its entry stays pending
        pool.step()
        assert pool.state.failed_starts == 0
        assert len(pool.state.live_members()) == 2


@pytest.mark.parametrize(("state", "phase"), [("starting", "restarting"),
                                              ("unhealthy", "unhealthy")])
def test_a_member_restarting_its_engine_is_not_serving_once_it_takes_long(
        setup: tuple[Pool, FakeCluster, Clock], state: str, phase: str) -> None:
    pool, cluster, clock = setup
    pool.step()
    for member in pool.state.members:
        cluster.run(member.id, 3600)
    pool.step()
    first = pool.state.members[0]
    cluster.set_state(first.id, state, restarts=1)
    clock.now += 1
    pool.step()
    assert first.phase == phase and first.down_since is not None
    assert [e.id for e in pool.ready_endpoints()] == [pool.state.members[1].id]  # not routed
    assert len(pool.state.live_members()) == 2  # a short restart is waited for
    clock.now += pool.timing.restart_grace
    pool.step()
    assert len(pool.state.live_members()) == 3  # a long one gets a replacement
    assert pool.state.members[2].phase == "pending"
    cluster.set_state(first.id, "ready")
    clock.now += 1
    pool.step()
    assert first.phase == "ready" and first.down_since is None
    assert first.restarts == 1
    assert pool.state.members[2].reason == "scaled down"  # the queued surplus is cancelled
    assert cluster.cancelled == [pool.state.members[2].job_id]
    assert any("restarting: not routed to" in e or "unhealthy: not routed to" in e
               for e in pool.state.events)


def test_workflow_items_left_scale_up_one_at_a_time_and_hold_off_idling(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    pool = Pool("stub", "m", (1, 3), registry=registry, backend=cluster, clock=clock,
                metrics=lambda e: (0.0, 0.0),  # the engines are idle between shards
                timing=Timing(lead_floor=20, overlap=5, metrics_period=0, idle_after=5,
                              scale_up_eta=600), drain_before=10)
    pool.step()
    cluster.run(pool.state.members[0].id, 3600)
    pool.step()
    assert pool.state.desired == 1  # nothing reported: idle, at the minimum
    report = WorkflowReporter(registry, "m", total=10_000)
    report._started -= 100  # 10 items/s so far: the 9,000 left take 15 min
    report.update(1000, force=True)
    assert remaining(registry, "m") is not None
    clock.now += 1
    pool.step()
    assert pool.state.desired == 2
    assert "9000 items left in 1 workflow(s)" in pool.state.events[-2]
    for _ in range(3):
        clock.now += 1
        pool.step()
    assert pool.state.desired == 2  # not again before the added one is ready
    cluster.run(pool.state.members[1].id, 3600)
    clock.now += 1
    pool.step()
    assert pool.state.desired == 3
    cluster.run(pool.state.members[2].id, 3600)
    for _ in range(20):
        clock.now += 1
        pool.step()
    assert pool.state.desired == 3  # idle engines, but items left: no scale-down
    assert pool.progress() == (1000, 10_000)
    assert pool.usage().items_done == 1000
    report.close()
    for _ in range(20):
        clock.now += 1
        cluster.honour_stops()
        pool.step()
    assert pool.state.desired == 1


def test_a_slow_rest_within_the_eta_does_not_scale_up(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    clock = Clock()
    cluster = FakeCluster(registry, clock)
    pool = Pool("stub", "m", (1, 3), registry=registry, backend=cluster, clock=clock,
                metrics=lambda e: (0.0, 1.0),
                timing=Timing(lead_floor=20, overlap=5, metrics_period=0, scale_up_eta=600),
                drain_before=10)
    pool.step()
    cluster.run(pool.state.members[0].id, 3600)
    report = WorkflowReporter(registry, "m", total=2000)
    report._started -= 100
    report.update(1000, force=True)  # 1,000 left at 10/s: 100 s, below the 600 s threshold
    for _ in range(5):
        clock.now += 1
        pool.step()
    assert pool.state.desired == 1
    report.close()
    assert remaining(registry, "m") is None


def test_clients_stop_routing_to_a_member_restarting_its_engine(
        setup: tuple[Pool, FakeCluster, Clock]) -> None:
    from nerschat.client.routing import EndpointPool

    def routed() -> set[str]:
        """What a client's routing table holds (a fresh view: no caching between looks)."""
        routing = EndpointPool(Registry(pool.registry.path), "m")
        routing.refresh(force=True)
        return {load.id for load in routing.loads()}

    pool, cluster, clock = setup
    pool.step()
    for member in pool.state.members:
        cluster.run(member.id, 3600)
    pool.step()
    first, second = pool.state.members
    assert routed() == {first.id, second.id}
    for state in ("starting", "unhealthy"):  # restarting in place, or not answering
        cluster.set_state(first.id, state, restarts=1)
        assert routed() == {second.id}
    cluster.set_state(first.id, "ready")
    assert routed() == {first.id, second.id}


@pytest.mark.parametrize("launch", [{"ttl": "x"}, {"kind": "bogus"}, {"options": [1]},
                                    {"max_restarts": True}, {"engine": 5}])
def test_resume_refuses_launch_options_of_the_wrong_type_in_one_line(
        setup: tuple[Pool, FakeCluster, Clock], launch: dict[str, object]) -> None:
    pool, cluster, clock = setup
    pool.step()
    path = store.state_path(pool.registry, "p1")
    data = json.loads(path.read_text())
    data["launch"].update(launch)
    data["heartbeat_at"] = 0.0
    path.write_text(json.dumps(data))
    (name,) = launch
    with pytest.raises(UsageError, match=f"field 'launch.{name}'"):
        Pool.resume(pool.registry, "p1", backend=cluster, clock=clock)
