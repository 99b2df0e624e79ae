"""How a pool submits, watches and cancels its member jobs: the launch API and squeue."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nerschat import slurm
from nerschat.errors import UsageError
from nerschat.parsl.launch import LaunchedJob, build_replicas, plan, resolve_site, submit
from nerschat.pool.state import Member
from nerschat.registry import Kind, Registry
from nerschat.slurm import is_job_id, parse_slurm_time


@dataclass(frozen=True)
class JobInfo:
    """One job as squeue shows it: state, start and end (epoch seconds, None if unknown)."""

    state: str
    start: float | None
    end: float | None


class Backend(Protocol):
    """Submits one member job, tells which jobs are queued, cancels one."""

    def submit(self) -> Member:
        """Submit one replica's job; its `pending` entry is in the registry on return."""

    def queue(self, job_ids: Sequence[str]) -> dict[str, JobInfo] | None:
        """The jobs among `job_ids` still in the queue; None when the scheduler cannot say."""

    def cancel(self, member: Member) -> None:
        """Cancel the member's job (best effort)."""


def squeue_jobs(job_ids: Sequence[str], timeout: float = 30.0) -> dict[str, JobInfo] | None:
    """`squeue` for these jobs: {job id: JobInfo}; None when squeue fails or is absent."""
    job_ids = [j for j in job_ids if is_job_id(j)]  # never an option or a list
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i|%T|%S|%e"],
                             capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # Every job gone: squeue refuses the list instead of printing nothing.
        return {} if "Invalid job id" in out.stderr else None
    jobs: dict[str, JobInfo] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            job, state, start, end = parts
            jobs[job] = JobInfo(state, parse_slurm_time(start), parse_slurm_time(end))
    return jobs


@dataclass
class PoolSpec:
    """What a pool keeps ready and how it launches members (as `nerschat launch`).

    `drain_before` is the members' own walltime margin (seconds before the end at which a
    pilot drains even if the pool has not asked it to); the pool hands over earlier.
    `max_restarts` (per 10 minutes) and the probe settings below are the members'
    restart-in-place watchdog (`nerschat serve --max-restarts`, `--health-timeout`,
    `--health-failures`, `--unhealthy-timeout`; None leaves the pilot's own default);
    `serve_options` are further `nerschat serve` options of every member, given after these
    (so they override them).

    The probe defaults make a frozen engine restarted in place within 30 s: a member's pilot
    probes `/health` every heartbeat (ttl / 3 = 5 s with the pool's 15 s ttl), each probe may
    take `health_timeout` = 3 s, two failures in a row (`health_failures`) mark the entry
    `unhealthy` (clients stop using it at once) and `unhealthy_timeout` = 5 s later without a
    successful probe the engine is killed and restarted. Worst case for a freeze just after a
    good probe: failures at +8 s and +16 s, kill at about +22 s, a stub ready again about 2 s
    later (the pool also submits a replacement if a member stays down for its
    `restart_grace`, 30 s, e.g. a real model that loads for minutes).

    Why this does not kill a busy real vLLM: its `/health` is answered by the API server
    process (`AsyncLLM.check_health` only tests the engine-core-dead flag; no round trip to
    the engine core), so it answers within milliseconds whatever the GPU load; it stays
    unanswered only when the API server's event loop itself stops for seconds. A member is
    killed only after two probes 8 s apart both got no answer within 3 s and nothing
    answered in the 5 s after: about 16 s without one answer. A busy but live engine core
    is judged by the pilot's separate stall check (token counters not moving while requests
    are held, 120 s), which these settings do not change.
    """

    engine: str
    model: str
    gpus_per_replica: int | None = None
    site: str | None = None
    walltime: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    image: str | None = None
    kind: Kind | None = None
    served_name: str | None = None
    options: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    ttl: float | None = 15.0  # heartbeats every 5 s: stop requests seen, frozen pilots found soon
    drain_before: float = 30.0
    check: bool = True
    max_restarts: int = 3
    unhealthy_timeout: float | None = 5.0
    health_timeout: float | None = 3.0
    health_failures: int | None = 2
    serve_options: tuple[str, ...] = ()

    def serve_args(self) -> tuple[str, ...]:
        """The `nerschat serve` options of every member's pilot."""
        args: tuple[str, ...] = ("--max-restarts", str(self.max_restarts))
        if self.health_timeout is not None:
            args += ("--health-timeout", f"{self.health_timeout:g}")
        if self.health_failures is not None:
            args += ("--health-failures", str(self.health_failures))
        if self.unhealthy_timeout is not None:
            args += ("--unhealthy-timeout", f"{self.unhealthy_timeout:g}")
        return args + tuple(self.serve_options)


@dataclass
class LaunchBackend:
    """Members through `nerschat.parsl.launch` (the site's provider), watched with squeue."""

    spec: PoolSpec
    registry: Registry
    _jobs: dict[str, LaunchedJob] = field(default_factory=dict, repr=False)
    _checked: bool = False
    _gpus: int | None = None

    def _replica(self) -> Any:
        spec = self.spec
        (replica,) = build_replicas(spec.engine, spec.model, 1, spec.gpus_per_replica, (),
                                    resolve_site(spec.site), image=spec.image,
                                    extra_args=spec.extra_args, kind=spec.kind,
                                    served_name=spec.served_name, options=spec.options)
        return replica

    @property
    def gpus(self) -> int:
        """GPUs per member, as the site resolves them."""
        if self._gpus is None:
            self._gpus = int(self._replica().gpus)
        return self._gpus

    def submit(self) -> Member:
        """One job with one pilot; pre-flight checks on the first submission only."""
        spec = self.spec
        replica = self._replica()
        launch_plan = plan([replica], site=spec.site, registry=self.registry,
                           account=spec.account, qos=spec.qos, walltime=spec.walltime,
                           constraint=spec.constraint, check=spec.check and not self._checked,
                           ttl=spec.ttl, drain_before=spec.drain_before,
                           serve_args=spec.serve_args())
        self._checked = True
        (job,) = submit(launch_plan)
        if job.slurm and not is_job_id(job.job_id):
            raise UsageError(f"sbatch gave {job.job_id!r}, not a SLURM job id")
        self._jobs[job.ids[0]] = job
        return Member(id=job.ids[0], job_id=job.job_id, slurm=job.slurm,
                      submitted_at=time.time(), gpus=replica.gpus)

    def queue(self, job_ids: Sequence[str]) -> dict[str, JobInfo] | None:
        """The SLURM members as squeue shows them."""
        return squeue_jobs(job_ids)

    def cancel(self, member: Member) -> None:
        """Cancel a SLURM member with scancel; end a local one through its provider."""
        if member.slurm:
            if not is_job_id(member.job_id):  # read from a file: never an option
                raise UsageError(f"member {member.id}: {member.job_id!r} is not a SLURM job "
                                 "id; not cancelled")
            slurm.scancel([member.job_id], timeout=60)  # gone already: nothing to do
            return
        job = self._jobs.get(member.id)
        if job is not None and job.provider is not None:
            job.provider.cancel([job.job_id])
