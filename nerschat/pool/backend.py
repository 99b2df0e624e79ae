"""How a pool submits, watches and cancels its member jobs: the launch API and squeue."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nerschat.parsl.launch import LaunchedJob, build_replicas, plan, resolve_site, submit
from nerschat.pool.state import Member
from nerschat.registry import Kind, Registry
from nerschat.slurm import parse_slurm_time


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
    `max_restarts` (per 10 minutes) and `unhealthy_timeout` (seconds; None: the pilot's
    default) are the members' restart-in-place watchdog (`nerschat serve --max-restarts`);
    `serve_options` are further `nerschat serve` options of every member (e.g. faster health
    probes: `("--health-timeout", "2", "--health-failures", "2")`).
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
    unhealthy_timeout: float | None = None
    serve_options: tuple[str, ...] = ()

    def serve_args(self) -> tuple[str, ...]:
        """The `nerschat serve` options of every member's pilot."""
        args: tuple[str, ...] = ("--max-restarts", str(self.max_restarts))
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
        self._jobs[job.ids[0]] = job
        return Member(id=job.ids[0], job_id=job.job_id, slurm=job.slurm,
                      submitted_at=time.time(), gpus=replica.gpus)

    def queue(self, job_ids: Sequence[str]) -> dict[str, JobInfo] | None:
        """The SLURM members as squeue shows them."""
        return squeue_jobs(job_ids)

    def cancel(self, member: Member) -> None:
        """Cancel a SLURM member with scancel; end a local one through its provider."""
        if member.slurm:
            subprocess.run(["scancel", member.job_id], capture_output=True, timeout=60,
                           check=False)
            return
        job = self._jobs.get(member.id)
        if job is not None and job.provider is not None:
            job.provider.cancel([job.job_id])
