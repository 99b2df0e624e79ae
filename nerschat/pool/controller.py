"""The pool controller: keep `desired` replicas ready, hand over before walltimes, replace losses.

One round (`Pool.step`), every `period` seconds:

1. **observe** each live member: its registry entry (pending, starting, ready, draining) and
   its job in squeue (start and walltime end). A member whose entry is removed or stale, or
   whose job left the queue, is gone; gone without the pool asking is a loss (its job is
   cancelled if it still holds a node).
2. **fill**: members that will serve past the hand-over horizon (not asked to drain, not
   draining, not *due*) must number `desired`; the pool submits the missing ones. A member is
   due when its walltime end is nearer than its own drain margin plus the lead time plus the
   overlap: a replacement submitted now is ready before the member must drain.
3. **hand over**: a due member is asked to drain (`Registry.request_stop`) only once at least
   `desired` other members have been ready for `overlap` seconds, so ready replicas never fall
   below `desired` while the queue lets replacements start.
4. **trim** surplus members (after a scale-down): queued ones are cancelled first, then ready
   ones drain while enough others stay ready.
5. **scale** (when min < max), one replica at a time (not while an added one is not ready
   yet): one more when the ready endpoints' waiting requests (the gauge each entry names in
   `load_metrics`) exceed `scale_up_waiting` each, or when the workflows using
   the model report remaining items that take longer than `scale_up_eta` seconds at their
   current rate (`nerschat.pool.progress`); one fewer after `idle_after` seconds with nothing
   waiting or running and no workflow reporting items left.

A member whose pilot is restarting its engine in place (entry back in `starting` after it was
ready: phase `restarting`) or whose engine stopped answering (`unhealthy`) is not routed to by
clients; once that lasts `restart_grace` seconds it no longer counts as serving either, so the
pool submits a replacement (and trims the surplus if the member recovers).

The lead time is learned from this pool's own members (submission to ready: queue wait plus
start-up): 1.5 times the longest of the last five, never below `lead_floor`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import types
import typing
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from nerschat.errors import FailureError, NerschatError, UsageError
from nerschat.pool import state as store
from nerschat.pool.accounting import Usage, usage
from nerschat.pool.backend import Backend, LaunchBackend, PoolSpec
from nerschat.pool.metrics import backlog
from nerschat.pool.progress import Remaining, remaining
from nerschat.pool.state import Handover, Member, Phase, PoolState
from nerschat.registry import Endpoint, Registry

logger = logging.getLogger(__name__)

SUBMIT_GRACE = 15.0  # a job just submitted may not show in squeue yet
RETRY_AFTER = 30.0  # after a refused submission
MAX_EVENTS = 100
MAX_EVENT_CHARS = 1000
MAX_FAILED_STARTS = 5  # members in a row that never became ready: the pool gives up


class PoolError(FailureError):
    """The pool could not keep its replicas (submissions refused, nothing became ready)."""


@dataclass
class Timing:
    """The controller's clock knobs, seconds."""

    period: float = 1.0
    lead_floor: float = 60.0
    overlap: float = 10.0
    metrics_period: float = 10.0
    scale_up_waiting: float = 4.0
    idle_after: float = 120.0
    restart_grace: float = 30.0
    scale_up_eta: float = 1800.0


def _fits(value: object, hint: Any) -> bool:
    """Whether a JSON value fits a PoolSpec field's type (tuples are lists in JSON)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


def launch_options(launch: dict[str, Any]) -> dict[str, Any]:
    """The PoolSpec fields of a saved `launch` dict, type-checked; ValueError naming a field.

    Unknown keys (a newer version's) are dropped; lists become tuples.
    """
    hints = typing.get_type_hints(PoolSpec)
    options: dict[str, Any] = {}
    for name, value in launch.items():
        if name not in hints:
            continue
        if not _fits(value, hints[name]):
            raise ValueError(f"field 'launch.{name}': {value!r:.60} has the wrong type")
        options[name] = tuple(value) if isinstance(value, list) else value
    return options


def _replicas(replicas: int | tuple[int, int]) -> tuple[int, int]:
    low, high = (replicas, replicas) if isinstance(replicas, int) else replicas
    if low < 1 or high < low:
        raise UsageError(f"replicas must be N >= 1 or (min, max) with 1 <= min <= max, got "
                         f"{replicas!r}")
    return low, high


class Pool:
    """Keep `replicas` pilots (or `(min, max)`) of `engine`/`model` ready for `duration`.

        with nerschat.Pool("vllm", "meta-llama/Llama-3.1-8B-Instruct", replicas=4,
                           site="perlmutter", account="m1234", walltime="06:00:00") as pool:
            pool.wait_ready()
            ...  # clients use nerschat.connect(model) as usual
            pool.report_progress(done, total)

    `start()` runs the controller in a background thread, `run()` in the calling one; the
    state is in `<registry>/pools/<id>.json`, so `nerschat pool status|stop ID` work from any
    process. Launch options (`site`, `walltime`, `account`, `qos`, `constraint`, `image`,
    `gpus_per_replica`, `options`, `ttl`, `drain_before` -- the members' own walltime margin,
    default 30 s) are those of `nerschat.launch`.
    """

    def __init__(self, engine: str, model: str, replicas: int | tuple[int, int] = 1, *,
                 registry: Registry | str | None = None, duration: float | None = None,
                 timing: Timing | None = None, backend: Backend | None = None,
                 clock: Callable[[], float] = time.time,
                 metrics: Callable[[Endpoint], tuple[float, float] | None] = backlog,
                 pool_id: str | None = None, **launch_options: Any) -> None:
        low, high = _replicas(replicas)
        if pool_id is not None:
            store.check_pool_id(pool_id)
        if duration is not None and duration <= 0:
            raise UsageError(f"duration must be positive seconds, got {duration}")
        self.registry = registry if isinstance(registry, Registry) else Registry(registry)
        self.spec = PoolSpec(engine=engine, model=model, **launch_options)
        self.timing = timing or Timing()
        self.backend: Backend = backend or LaunchBackend(self.spec, self.registry)
        self.clock = clock
        self.metrics = metrics
        now = clock()
        self.state = PoolState(
            id=pool_id or f"pool-{uuid.uuid4().hex[:6]}", engine=engine,
            model=self.spec.served_name or model, min_replicas=low, max_replicas=high,
            desired=low, created_at=now, until=None if duration is None else now + duration,
            controller_pid=os.getpid(), controller_host=socket.gethostname(),
            lead_time_s=self.timing.lead_floor, launch=asdict(self.spec),
            timing=asdict(self.timing),
        )
        try:  # fail here, not at the first write: what readers would refuse is never written
            PoolState.from_dict(json.loads(json.dumps(self.state.to_dict())))
        except ValueError as exc:
            raise UsageError(f"pool {self.state.id}: {exc}") from None
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._next_metrics = 0.0
        self._idle_since: float | None = None
        self.error: BaseException | None = None

    @classmethod
    def resume(cls, registry: Registry | str | None, pool_id: str, **controller: Any) -> Pool:
        """A new controller for a pool whose controller died (its members kept running).

        The members, hand-overs and lead samples are taken over from the state file; a pool
        already stopped stays stopped. UsageError (`PoolNotFound`) for an unknown id.
        `controller` holds `backend`, `clock` or `metrics` to use instead of the defaults.
        """
        reg = registry if isinstance(registry, Registry) else Registry(registry)
        old, st = store.read_state_file(reg, pool_id)
        path = store.state_path(reg, pool_id)
        if st.st_uid != os.geteuid():
            # Its launch options become job scripts: only ever our own (not a teammate's).
            raise UsageError(f"{path} belongs to uid {st.st_uid}, not to you: not resuming a "
                             "pool from someone else's file")
        try:
            options = launch_options(old.launch)
        except ValueError as exc:
            raise UsageError(f"{path}: {exc}; not resuming") from None
        engine = options.pop("engine", old.engine)
        model = options.pop("model", old.model)
        timing = Timing(**{k: v for k, v in old.timing.items()
                           if k in Timing.__dataclass_fields__})
        pool = cls(engine, model, (old.min_replicas, old.max_replicas), registry=reg,
                   timing=timing, pool_id=pool_id, **options, **controller)
        old.controller_pid, old.controller_host = os.getpid(), socket.gethostname()
        pool.state = old
        if old.status != "stopped":
            pool._event(time.time(), "controller resumed")
        return pool

    # -- public -----------------------------------------------------------------------

    @property
    def id(self) -> str:
        """The pool's id (`nerschat pool status|stop ID`)."""
        return self.state.id

    def lead_time(self) -> float:
        """Seconds a replacement needs from submission to ready, as learned (>= the floor)."""
        samples = self.state.lead_samples[-5:]
        learned = 1.5 * max(samples) if samples else 0.0
        return max(self.timing.lead_floor, learned)

    def run(self) -> PoolState:
        """Run the controller until the pool stops (duration over or a stop request)."""
        store.write_state(self.registry, self.state)
        while self.step():
            time.sleep(self.timing.period)
        return self.state

    def start(self) -> Pool:
        """Run the controller in a daemon thread; returns at once."""
        store.write_state(self.registry, self.state)

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # noqa: BLE001 -- kept for wait_ready/stop to raise
                self.error = exc
                logger.exception("pool %s: controller failed", self.id)

        self._thread = threading.Thread(target=target, name=f"nerschat-{self.id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait: bool = True, timeout: float = 300.0) -> None:
        """Drain every member and end the controller (waits for that unless `wait=False`)."""
        store.request_stop(self.registry, self.id)
        if wait and self._thread is not None:
            self._thread.join(timeout)

    def wait_ready(self, timeout: float = 900.0, poll: float = 0.5, *,
                   count_queue: bool = True) -> list[Endpoint]:
        """Block until `desired` members are ready; PoolError with their phases if not.

        With `count_queue=False` the `timeout` (seconds) is for start-up only: it does not
        run while a member's job is still queued (`pending`).
        """
        deadline = time.monotonic() + timeout
        while True:
            if not count_queue and any(m.phase == "pending" for m in self.state.live_members()):
                deadline = time.monotonic() + timeout
            if self.error is not None:
                raise PoolError(f"pool {self.id}: controller failed: {self.error}")
            if self.state.error:
                raise PoolError(f"pool {self.id}: {self.state.error}")
            ready = self.ready_endpoints()
            if len(ready) >= self.state.desired:
                return ready
            if time.monotonic() > deadline:
                phases = ", ".join(f"{m.id}: {m.phase}" for m in self.state.live_members())
                raise PoolError(f"pool {self.id}: {len(ready)} of {self.state.desired} "
                                f"replicas ready after {timeout:.0f} s ({phases or 'none'}); "
                                "see 'nerschat pool status'")
            time.sleep(poll)

    def ready_endpoints(self) -> list[Endpoint]:
        """The registry entries of the members that are ready now."""
        now = time.time()
        entries = (self.registry.get(m.id) for m in list(self.state.members) if m.live)
        return [e for e in entries if e is not None and e.is_usable(now)]

    def report_progress(self, done: int, total: int | None = None) -> None:
        """Record the items finished so far (and the total) for the pool's accounting."""
        store.write_progress(self.registry, self.id, done, total)

    def progress(self) -> tuple[int, int | None] | None:
        """`(done, total)` items of the pool's work, None when nobody reported any.

        As reported to the pool (`report_progress`), else summed over the workflows that use
        its model (`nerschat.pool.progress`).
        """
        return pool_progress(self.registry, self.state, self.clock())

    def usage(self) -> Usage:
        """GPU-hours so far, items per GPU-hour and the estimate for the rest."""
        return usage(self.state, self.clock(), self.progress())

    def __enter__(self) -> Pool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one round ----------------------------------------------------------------------

    def step(self) -> bool:
        """One controller round; False once the pool has stopped (every member gone)."""
        now = self.clock()
        st = self.state
        if st.status == "stopped":
            return False
        self._observe(now)
        if st.status == "running":
            if store.stop_requested(self.registry, st.id):
                self._event(now, "stop requested")
                st.status = "stopping"
            elif st.until is not None and now >= st.until:
                self._event(now, "duration over")
                st.status = "stopping"
        if st.status == "stopping":
            self._stop_all(now)
        else:
            self._scale(now)
            self._fill(now)
            self._handover(now)
            self._trim(now)
        st.heartbeat_at = now
        st.lead_time_s = self.lead_time()
        store.write_state(self.registry, st)
        if st.status == "stopped":
            store.remove_files(self.registry, st.id)
            return False
        return True

    def _event(self, now: float, text: str) -> None:
        line = f"{time.strftime('%H:%M:%S', time.localtime(now))} {text}"[:MAX_EVENT_CHARS]
        logger.info("pool %s: %s", self.id, text)
        self.state.events = [*self.state.events[-(MAX_EVENTS - 1):], line]

    def _observe(self, now: float) -> None:
        live = self.state.live_members()
        slurm_ids = [m.job_id for m in live if m.slurm]
        queue = self.backend.queue(slurm_ids) if slurm_ids else {}
        for member in live:
            entry = self.registry.get(member.id)
            info = queue.get(member.job_id) if queue is not None else None
            if info is not None and info.state != "PENDING":
                member.started_at = member.started_at or info.start or now
                member.expires_at = member.expires_at or info.end
            job_gone = (member.slurm and queue is not None and info is None
                        and now - member.submitted_at > SUBMIT_GRACE)
            if entry is not None and not entry.is_stale(now) and not job_gone:
                self._update(member, entry, now)
                continue
            why = ("its job left the queue" if job_gone else
                   "its heartbeat is stale" if entry is not None else "its entry was removed")
            gave_up = store.exit_reason(self.registry, member.id)
            if gave_up:
                why = f"its pilot gave up: {gave_up}"
            if member.drain_at is None:
                was = member.phase
                member.reason = f"lost ({why}, was {was})"
                self.state.replaced_losses += 1
                self._event(now, f"{member.id} (job {member.job_id}) lost: {why}")
                if member.ready_at is None and (was == "starting" or entry is None and not job_gone):
                    # Its pilot (or job) failed before ready; not a queued job cancelled.
                    self._failed_start(member, now)
                if not job_gone:
                    with contextlib.suppress(OSError, NerschatError):
                        self.backend.cancel(member)
                if entry is not None:
                    self.registry.remove(member.id)  # a stale entry routes nobody anywhere
            elif not member.reason:
                member.reason = "drained"
            member.phase = "gone"
            member.ended_at = now

    def _failed_start(self, member: Member, now: float) -> None:
        """Back off after members that die before they are ready; give up after a few."""
        st = self.state
        st.failed_starts += 1
        if st.failed_starts >= MAX_FAILED_STARTS and st.status == "running":
            logs = self.registry.log_dir / f"{member.id}.log"
            st.error = (f"{st.failed_starts} members in a row never became ready (last: "
                        f"{member.id}, job {member.job_id}); see {logs} and the job's output")
            self._event(now, f"giving up: {st.error}")
            st.status = "stopping"
        elif st.failed_starts >= 2:
            delay = min(600.0, RETRY_AFTER * 2 ** (st.failed_starts - 2))
            self._retry_at = max(self._retry_at, now + delay)
            self._event(now, f"{st.failed_starts} members in a row never became ready: next "
                             f"submission in {delay:.0f} s")

    def _update(self, member: Member, entry: Endpoint, now: float) -> None:
        if entry.state != "pending" and member.started_at is None:
            member.started_at = entry.started_at or now
        if entry.expires_at is not None:
            member.expires_at = entry.expires_at
        restarts = entry.extra.get("restarts")
        if isinstance(restarts, int) and restarts > member.restarts:
            member.restarts = restarts
            self._event(now, f"{member.id} (job {member.job_id}): engine restarted in place "
                             f"({restarts} so far)")
        phase: Phase = entry.state
        if entry.state == "starting" and member.ready_at is not None:
            phase = "restarting"  # its pilot restarts a dead engine in place
        if phase in ("unhealthy", "restarting"):
            if member.down_since is None:
                member.down_since = now
                self._event(now, f"{member.id} (job {member.job_id}) {phase}: not routed to")
        elif member.down_since is not None and entry.state == "ready":
            self._event(now, f"{member.id} (job {member.job_id}) ready again after "
                             f"{now - member.down_since:.1f} s")
            member.down_since = None
        if entry.state == "ready" and entry.model and self.state.served_model != entry.model:
            self.state.served_model = entry.model
        if entry.state == "ready" and member.ready_at is None:
            member.ready_at = entry.ready_at or now
            self.state.failed_starts = 0
            sample = member.ready_at - member.submitted_at
            self.state.lead_samples = [*self.state.lead_samples[-19:], round(sample, 3)]
            self._event(now, f"{member.id} (job {member.job_id}) ready {sample:.1f} s after "
                             "submission")
        member.phase = phase

    def _due(self, member: Member, now: float) -> bool:
        left = member.time_left(now)
        if left is None or member.expires_at is None:
            return False
        until = self.state.until
        if until is not None and member.expires_at - self.spec.drain_before >= until:
            return False  # it outlasts the pool
        return left <= self.spec.drain_before + self.lead_time() + self.timing.overlap

    def _down_too_long(self, member: Member, now: float) -> bool:
        """Unhealthy or restarting for `restart_grace` seconds: a replica the pool lacks."""
        return (member.down_since is not None
                and now - member.down_since >= self.timing.restart_grace)

    def _serving(self, now: float) -> list[Member]:
        return [m for m in self.state.live_members()
                if m.drain_at is None and m.phase != "draining" and not self._due(m, now)
                and not self._down_too_long(m, now)]

    def _fill(self, now: float) -> None:
        missing = self.state.desired - len(self._serving(now))
        if missing <= 0 or now < self._retry_at:
            return
        for _ in range(missing):
            try:
                member = self.backend.submit()
            except UsageError:
                raise
            except NerschatError as exc:
                self._retry_at = now + RETRY_AFTER
                self._event(now, f"submission refused, retrying in {RETRY_AFTER:.0f} s: {exc}")
                return
            self.state.members.append(member)
            self._event(now, f"submitted {member.id} (job {member.job_id})")

    def _handover(self, now: float) -> None:
        live = self.state.live_members()
        ready = [m for m in live if m.phase == "ready" and m.drain_at is None]
        used = {h.new for h in self.state.handovers}
        for member in sorted((m for m in ready if self._due(m, now)),
                             key=lambda m: m.expires_at or 0.0):
            others = [o for o in ready if o is not member and o.drain_at is None
                      and o.ready_at is not None and now - o.ready_at >= self.timing.overlap]
            if len(others) < self.state.desired:
                continue
            fresh = [o for o in others if not self._due(o, now) and o.id not in used]
            self._drain(member, now, "handed over")
            if fresh:
                new = max(fresh, key=lambda o: o.ready_at or 0.0)
                used.add(new.id)
                handover = Handover(member.id, new.id, new.ready_at or now, now,
                                    member.time_left(now))
                self.state.handovers.append(handover)
                self._event(now, f"hand-over {member.id} -> {new.id}: overlap "
                                 f"{handover.overlap_s:.1f} s, "
                                 f"{handover.old_time_left_s or 0:.0f} s of walltime left")

    def _trim(self, now: float) -> None:
        serving = self._serving(now)
        surplus = len(serving) - self.state.desired
        if surplus <= 0:
            return
        queued = sorted((m for m in serving if m.phase in ("pending", "starting")),
                        key=lambda m: -m.submitted_at)
        for member in queued[:surplus]:
            self._drain(member, now, "scaled down")
            surplus -= 1
        ready = [m for m in serving if m.phase == "ready" and m.drain_at is None]
        for member in sorted(ready, key=lambda m: m.expires_at or float("inf")):
            if surplus <= 0 or len(ready) - 1 < self.state.desired:
                break
            self._drain(member, now, "scaled down")
            ready.remove(member)
            surplus -= 1

    def _drain(self, member: Member, now: float, reason: str) -> None:
        member.drain_at = now
        member.reason = reason
        if member.phase == "pending":
            with contextlib.suppress(OSError, NerschatError):
                self.backend.cancel(member)
            self.registry.remove(member.id)
        else:
            self.registry.request_stop(member.id)
        self._event(now, f"{member.id} (job {member.job_id}) asked to drain: {reason}")

    def _stop_all(self, now: float) -> None:
        for member in self.state.live_members():
            if member.drain_at is None:
                self._drain(member, now, "pool stopped")
        if not self.state.live_members():
            self.state.status = "stopped"
            self._event(now, "stopped")

    def _scale(self, now: float) -> None:
        st = self.state
        if st.min_replicas == st.max_replicas or now < self._next_metrics:
            return
        self._next_metrics = now + self.timing.metrics_period
        ready = self.ready_endpoints()
        readings = [self.metrics(e) for e in ready]
        known = [r for r in readings if r is not None]
        if not known:
            return
        waiting = sum(r[0] for r in known)
        running = sum(r[1] for r in known)
        work = remaining(self.registry, st.serves, now)
        items_left = work.remaining if work is not None else 0
        why = self._scale_up_reason(waiting, len(known), work)
        if why and st.desired < st.max_replicas:
            if len(ready) < st.desired:
                return  # the last one added is not ready yet: judge again once it is
            st.desired += 1
            self._idle_since = None
            self._event(now, f"scale up to {st.desired}: {why}")
        elif waiting == 0 and running == 0 and items_left == 0:
            if self._idle_since is None:
                self._idle_since = now
            elif now - self._idle_since >= self.timing.idle_after and st.desired > st.min_replicas:
                st.desired -= 1
                self._idle_since = now
                self._event(now, f"scale down to {st.desired}: idle for "
                                 f"{self.timing.idle_after:.0f} s")
        else:
            self._idle_since = None

    def _scale_up_reason(self, waiting: float, endpoints: int, work: Remaining | None) -> str:
        """Why one more replica would help now ("" if it would not)."""
        if waiting >= self.timing.scale_up_waiting * endpoints:
            return f"{waiting:.0f} requests waiting"
        eta = work.eta_s() if work is not None else None
        if work is not None and eta is not None and eta > self.timing.scale_up_eta:
            return (f"{work.remaining} items left in {work.workflows} workflow(s), "
                    f"{eta / 60:.0f} min at {work.rate:.2f} items/s")
        return ""


def pool_progress(registry: Registry, state: PoolState, now: float
                  ) -> tuple[int, int | None] | None:
    """`(done, total)` items of a pool's work, None when nobody reported any.

    As reported to the pool itself (`Pool.report_progress`), else summed over the fresh
    reports of the workflows using its model.
    """
    own = store.read_progress(registry, state.id)
    if own is not None:
        return own
    work = remaining(registry, state.serves, now)
    return None if work is None else (work.done, work.total)
