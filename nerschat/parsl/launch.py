"""Service-mode pilots in one call: plan, check, submit through the site's Parsl provider.

    jobs = launch("vllm", "meta-llama/Llama-3.1-8B-Instruct", replicas=4, site="perlmutter",
                  account="m1234")
    jobs[0].job_id; jobs[0].wait_ready(); ...; jobs[0].stop()

The flow, one direction:

1. **plan**: replicas are packed onto nodes by GPU count (4 one-GPU replicas per Perlmutter
   node, 2 with two GPUs each; a replica needing no GPU gets a job of its own);
2. **pre-flight** (`nerschat.parsl.preflight`): walltime, GPUs, registry on a shared file
   system, image pulled, weights cached -- each a one-line error with the fix;
3. **submit**: the site config's `pilot_provider(JobRequest)` (Parsl's SlurmProvider with
   its launcher, or LocalProvider for `--site local`) submits a job whose body (rendered
   from `nerschat/templates/pilot-job.sh`) runs one `nerschat serve --id ID` per replica,
   each pinned to its GPUs; the jobs outlive the caller;
4. **pending entries**: each replica gets a registry entry in state `pending` carrying the
   job id (`slurm_job_id`), which the pilot's own entry (same id) replaces when it starts.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from nerschat.errors import FailureError, UsageError
from nerschat.parsl.config import (
    JobRequest,
    Site,
    load_site,
    normalize_walltime,
    pilot_provider_of,
    site_of,
)
from nerschat.parsl.jobscript import run_command, write_body
from nerschat.parsl.preflight import (
    check_gpus,
    check_image,
    check_python_env,
    check_registry_shared,
    check_walltime,
    check_weights,
)
from nerschat.registry import Endpoint, Kind, Registry
from nerschat.sites import SITES as SITES  # re-exported: the names --site takes

# A pending entry has no heartbeat: it stands until its pilot replaces it, the job's own
# clean-up removes it, or a reader finds the job gone from the queue (by `slurm_job_id`).
PENDING_TTL = 14 * 24 * 3600.0
DEFAULT_DRAIN_BEFORE = 120.0
ENGINE_KINDS: dict[str, Kind] = {"vllm": "llm", "tei": "embedding", "stub": "llm"}


class LaunchError(FailureError):
    """The scheduler refused a job (sbatch failed) or a launched pilot failed."""


@dataclass(frozen=True)
class Replica:
    """One pilot of a launch: the engine, the model and the GPUs it needs (0: none)."""

    engine: str
    model: str
    gpus: int = 0
    image: str | None = None
    kind: Kind | None = None
    served_name: str | None = None
    options: tuple[str, ...] = ()  # NAME=VALUE engine options, as `nerschat serve -E`
    extra_args: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise UsageError(f"GPUs per replica must be >= 0, got {self.gpus}")

    @property
    def served(self) -> str:
        """The name clients ask for."""
        return self.served_name or self.model


def parse_pack(text: str) -> Replica:
    """`ENGINE:MODEL[:gpus=N]` (the model may itself hold colons, e.g. `local:minilm`)."""
    engine, sep, rest = text.partition(":")
    if not sep or not rest:
        raise UsageError(f"--pack {text!r} is not ENGINE:MODEL[:gpus=N]")
    gpus = 1 if engine in ("vllm", "tei") else 0
    match = re.fullmatch(r"(.+):gpus=(\d+)", rest)
    if match:
        rest, gpus = match.group(1), int(match.group(2))
    return Replica(engine=engine, model=rest, gpus=gpus)


def pack(replicas: Sequence[Replica], gpus_per_node: int) -> list[list[Replica]]:
    """Replicas grouped into jobs (one node each), first fit by decreasing GPU count.

    A replica that needs no GPU, or a site with no GPUs per node, gets a job of its own.
    """
    jobs: list[list[Replica]] = []
    free: list[int] = []
    for replica in sorted(replicas, key=lambda r: -r.gpus):
        if replica.gpus == 0 or gpus_per_node <= 0:
            jobs.append([replica])
            free.append(-1)
            continue
        for i, left in enumerate(free):
            if left >= replica.gpus:
                jobs[i].append(replica)
                free[i] -= replica.gpus
                break
        else:
            jobs.append([replica])
            free.append(gpus_per_node - replica.gpus)
    return jobs


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text.rsplit("/", 1)[-1]).strip("-.")[:40] or "model"


def _dq(value: str) -> str:
    """Double-quoted for bash: `$VARS` expand on the node, nothing else does."""
    return '"' + re.sub(r'(["\\`])', r"\\\1", value) + '"'


@dataclass
class PlannedJob:
    """One job of a launch: its replicas, their entry ids and the rendered body."""

    replicas: list[Replica]
    ids: list[str]
    body: str = ""

    @property
    def gpus(self) -> int:
        """GPUs the job asks for (on its one node)."""
        return sum(r.gpus for r in self.replicas)


def default_site() -> str:
    """The site to use when none is named.

    `perlmutter` on Perlmutter (NERSC sets `$NERSC_HOST`), else `slurm` where `sbatch` is on
    PATH, else `local`.
    """
    import shutil

    if os.environ.get("NERSC_HOST") == "perlmutter":
        return "perlmutter"
    return "slurm" if shutil.which("sbatch") else "local"


def resolve_site(site: str | None) -> ModuleType:
    """Load a site config module; ConfigError naming the choices if there is none.

    `site` is a packaged site's name (`perlmutter`, `slurm`, `local`: `nerschat.sites`) or a
    path to a config file; None means `default_site()`.
    """
    return load_site(site or default_site())


def render_body(launch_id: str, job: PlannedJob, site: Site, registry: Registry, *,
                ttl: float | None = None, drain_before: float | None = None,
                serve_args: Sequence[str] = (), walltime: str | None = None) -> str:
    """The job body: exports of the site's environment, one `nerschat serve` per replica.

    `serve_args` are further `nerschat serve` options for every pilot (e.g. `--max-restarts 3`).
    `walltime` (`HH:MM:SS`) goes to each pilot too: it drains and ends by then even where no
    scheduler enforces it (`--site local`).
    """
    template = resources.files("nerschat").joinpath("templates/pilot-job.sh").read_text()
    exports = [f"export {k}={_dq(v)}" for k, v in site.environment().items()]
    lines: list[str] = []
    first_gpu = 0
    for slot, (replica, endpoint_id) in enumerate(zip(job.replicas, job.ids)):
        argv = ["nerschat", "serve", "--engine", replica.engine, "--model", replica.model,
                "--registry", str(registry.path.absolute()), "--id", endpoint_id,
                "--runtime", site.runtime if replica.image else "none"]
        if registry.shared:
            argv.append("--shared")
        if replica.image:
            argv += ["--image", replica.image]
            if site.modules:  # the site's runtime modules, e.g. Shifter's gpu,nccl-plugin
                argv += ["--runtime-modules", ",".join(site.modules)]
        if replica.kind:
            argv += ["--kind", replica.kind]
        if replica.served_name:
            argv += ["--served-name", replica.served_name]
        for option in replica.options:
            argv += ["--engine-opt", option]
        if ttl is not None:
            argv += ["--ttl", f"{ttl:g}"]
        if drain_before is not None:
            argv += ["--drain-before", f"{drain_before:g}"]
        argv += list(serve_args)
        if walltime is not None:
            argv += ["--walltime", walltime]
        prefix = ""
        if site.compile_cache and replica.engine == "vllm":
            cache = f"{site.compile_cache}/{_slug(replica.model)}/{slot}"
            prefix = f"VLLM_CACHE_ROOT={_dq(cache)} "
        command = shlex.join(argv)
        if replica.gpus:
            command += f' --gpus "$(gpu_slice {first_gpu} {replica.gpus})"'
            first_gpu += replica.gpus
        if replica.extra_args:
            command += " -- " + shlex.join(replica.extra_args)
        lines += [f"{prefix}{command} &", "pids+=($!)"]
    entries = " ".join(shlex.quote(str(path.absolute())) for i in job.ids
                       for path in (registry.entry_path(i), registry.stop_path(i)))
    summary = ", ".join(f"{r.engine}:{r.model}" + (f" ({r.gpus} GPU)" if r.gpus else "")
                        for r in job.replicas)
    values = {
        "launch_id": launch_id, "summary": summary, "exports": "\n".join(exports),
        "gpu_range": " ".join(str(i) for i in range(job.gpus)), "pilots": "\n".join(lines),
        "entries": entries,
    }
    for name, value in values.items():
        template = template.replace("{{" + name + "}}", value)
    return template


@dataclass
class LaunchedJob:
    """A submitted pilot job: its scheduler id and the registry ids of its pilots."""

    job_id: str
    ids: list[str]
    registry: Registry
    slurm: bool
    script: Path | None = None
    provider: Any = field(default=None, repr=False)

    def entries(self) -> list[Endpoint]:
        """The registry entries of this job's pilots that exist now (pending or later)."""
        return [e for e in (self.registry.get(i) for i in self.ids) if e is not None]

    def wait_ready(self, timeout: float = 900.0, poll: float = 0.5) -> list[Endpoint]:
        """Block until every pilot of the job is ready; LaunchError naming the job if not."""
        deadline = time.monotonic() + timeout
        while True:
            ready = [e for e in self.entries() if e.is_usable()]
            if len(ready) == len(self.ids):
                return ready
            if time.monotonic() > deadline:
                states = ", ".join(f"{e.id}: {e.status()}" for e in self.entries()) or "no entry"
                raise LaunchError(f"job {self.job_id} ({self.phase()}): {len(ready)} of "
                                  f"{len(self.ids)} pilots ready after {timeout:.0f} s "
                                  f"({states}); see 'nerschat ls'")
            time.sleep(poll)

    def phase(self) -> str:
        """The job as SLURM sees it, as one phrase.

        `PENDING (Resources), expected start 2026-...`, `RUNNING`, `not in the queue` (also when
        SLURM cannot answer), or `local process` for `--site local`.
        """
        from nerschat.slurm import is_job_id, squeue

        if not self.slurm:
            return "local process"
        if not is_job_id(self.job_id):
            return "not in the queue"
        line = squeue(f"--jobs={self.job_id}", "-o", "%T|%r|%S").strip().splitlines()
        if not line:
            return "not in the queue"
        state, reason, start = (line[0].split("|") + ["", ""])[:3]
        if state != "PENDING":
            return state
        text = f"PENDING ({reason})" if reason and reason != "None" else "PENDING"
        return text + (f", expected start {start}" if start[:1].isdigit() else "")

    def stop(self) -> None:
        """Ask the pilots to drain; cancel the job if none of them has started yet."""
        started = [e for e in self.entries() if e.state != "pending"]
        for endpoint_id in self.ids:
            self.registry.request_stop(endpoint_id)
        if not started and self.provider is not None:
            if self.slurm:
                from nerschat import slurm

                problem = slurm.scancel([self.job_id])  # not Parsl's: it runs a shell line
                if problem:
                    raise LaunchError(problem)
            else:
                self.provider.cancel([self.job_id])
            for endpoint_id in self.ids:
                self.registry.remove(endpoint_id)


@dataclass
class LaunchPlan:
    """Everything `submit` needs; `launch` builds and checks one."""

    launch_id: str
    site: Site
    module: ModuleType
    request: JobRequest
    registry: Registry
    jobs: list[PlannedJob]
    providers: dict[JobRequest, Any] = field(default_factory=dict, repr=False)


def plan(replicas: Sequence[Replica], *, site: str | None = None, registry: Registry | None = None,
         account: str | None = None, qos: str | None = None, walltime: str | None = None,
         constraint: str | None = None, check: bool = True, ttl: float | None = None,
         drain_before: float | None = None, serve_args: Sequence[str] = ()) -> LaunchPlan:
    """Pack the replicas into jobs, run the pre-flight checks, render each job's body.

    Raises
    ------
    UsageError
        (`ConfigError`, `PreflightError`) for anything that would fail after queuing.
    """
    if not replicas:
        raise UsageError("nothing to launch: pass --engine and --model, or --pack")
    from nerschat.pilot.engines import get_engine

    for replica in replicas:
        get_engine(replica.engine)  # an unknown engine is a one-line usage error, not a job
    module = resolve_site(site)
    registry = registry or Registry()
    facts = {r.engine: site_of(module, r.engine) for r in replicas}
    base = merge_sites(list(facts.values()))
    replicas = [with_image(r, facts[r.engine]) for r in replicas]
    # A site may cap GPUs per job below a node's (e.g. a shared QOS): `gpus_per_job(qos)`.
    cap = getattr(module, "gpus_per_job", None)
    jobs_of = pack(replicas, cap(qos) if callable(cap) else base.gpus_per_node)
    launch_id = uuid.uuid4().hex[:6]
    # One parser for every SLURM time form; the provider gets `HH:MM:SS` (Parsl's only form).
    walltime = normalize_walltime(walltime) if walltime is not None else None
    wall = walltime or (normalize_walltime(os.environ["NERSCHAT_WALLTIME"])
                        if os.environ.get("NERSCHAT_WALLTIME") else None)
    request = JobRequest(account=account, qos=qos, walltime=walltime, constraint=constraint)
    jobs: list[PlannedJob] = []
    for n, members in enumerate(jobs_of):
        ids = [f"{_slug(r.served)}.{launch_id}.{n}-{i}" for i, r in enumerate(members)]
        jobs.append(PlannedJob(members, ids))
    if check:
        for replica in replicas:
            site_facts = facts[replica.engine]
            check_gpus(replica.engine, replica.gpus, site_facts)
            check_image(site_facts.runtime, replica.image)
            check_weights(replica.engine, replica.model, site_facts)
        check_registry_shared(registry.path, base)
        check_python_env(base)
    for job in jobs:
        job.body = render_body(launch_id, job, base, registry, ttl=ttl, drain_before=drain_before,
                               serve_args=serve_args, walltime=wall)
    result = LaunchPlan(launch_id, base, module, request, registry, jobs)
    if check:
        # The provider resolves defaults (walltime, account) from the site config itself.
        provider = _provider(result, jobs[0])
        walltime_value = getattr(provider, "walltime", None)
        if not base.cluster:
            walltime_value = wall  # a local provider has none: the pilots apply it
        if isinstance(walltime_value, str):
            check_walltime(walltime_value, DEFAULT_DRAIN_BEFORE if drain_before is None
                           else drain_before)
    return result


def merge_sites(sites: Sequence[Site]) -> Site:
    """One job's facts when it packs several engines.

    The first site, with the environment and compile cache of all (a vLLM replica packed after
    a TEI one still gets its caches).
    """
    env: dict[str, str] = {}
    for site in sites:
        env.update(site.env)
    compile_cache = next((s.compile_cache for s in sites if s.compile_cache), None)
    return replace(sites[0], env=env, compile_cache=compile_cache)


def with_image(replica: Replica, site: Site) -> Replica:
    """The replica with its image resolved.

    The user's image, else the engine recipe's pinned one when the site runs containers; none
    without a container runtime, or for the stub unless the user gave one (then the stub runs
    in the container like a real engine, which tests use with a fake runtime).
    """
    if site.runtime == "none":
        return replace(replica, image=None)
    return replace(replica, image=replica.image or default_image(replica.engine))


def default_image(engine: str) -> str | None:
    """The engine recipe's pinned image: the one place images come from."""
    from nerschat.pilot.engines import get_engine

    image: str | None = get_engine(engine).default_image
    return image


def _provider(launch_plan: LaunchPlan, job: PlannedJob) -> Any:
    """The site's provider for this job's request.

    One per distinct request: a SlurmProvider runs `sacct` when built, which takes seconds on a
    busy login node.
    """
    images = {r.image for r in job.replicas}
    request = replace(launch_plan.request, gpus=job.gpus,
                      image=images.pop() if len(images) == 1 else None)
    if request not in launch_plan.providers:
        launch_plan.providers[request] = pilot_provider_of(launch_plan.module, request)
    return launch_plan.providers[request]


def _job_name(job: PlannedJob) -> str:
    return "nerschat." + _slug(job.replicas[0].served)


def _is_slurm(provider: Any) -> bool:
    from parsl.providers import SlurmProvider

    return isinstance(provider, SlurmProvider)


@contextlib.contextmanager
def _no_submission(provider: Any) -> Iterator[None]:
    """Let the provider render its script but answer `sbatch` itself, running nothing."""
    real = provider.execute_wait

    def fake(cmd: str, timeout: int | None = None) -> tuple[int, str, str]:
        if cmd.startswith("sbatch "):
            return 0, "Submitted batch job DRYRUN\n", ""
        return int(real(cmd, timeout)[0]), "", ""

    provider.execute_wait = fake
    try:
        yield
    finally:
        provider.execute_wait = real


def render_scripts(launch_plan: LaunchPlan) -> str:
    """The job scripts as the site's provider renders them (nothing is submitted)."""
    parts = []
    for job in launch_plan.jobs:
        provider = _provider(launch_plan, job)
        with tempfile.TemporaryDirectory() as tmp:
            provider.script_dir = tmp
            body_path = launch_plan.registry.path.absolute() / "jobs" / f"{job.ids[0]}.sh"
            command = run_command(body_path, job.body)
            if _is_slurm(provider):
                with _no_submission(provider):
                    provider.submit(command, 1, job_name=_job_name(job))
                (script,) = [p for p in Path(tmp).iterdir() if p.name.startswith("nerschat.")
                             and p.suffix not in (".stdout", ".stderr")]
                rendered = script.read_text()
            else:
                rendered = (provider.worker_init + "\n"
                            + provider.launcher(command, 1, 1, tmp))
        parts.append(f"# ---- job script ({type(provider).__name__}) ----\n{rendered.strip()}\n"
                     f"# ---- {body_path} ----\n{job.body.strip()}\n")
    return "\n".join(parts)


def submit(launch_plan: LaunchPlan) -> list[LaunchedJob]:
    """Submit every job of the plan; publish each replica's `pending` entry.

    Raises
    ------
    LaunchError
        the provider could not submit (the scheduler's own message is included); jobs
        submitted before it stay submitted and are returned by nothing: cancel them with
        their ids from the message.
    """
    from parsl.providers.errors import SubmitException

    registry = launch_plan.registry
    registry.ensure()
    jobs_dir = registry.path / "jobs"
    jobs_dir.mkdir(mode=registry.dir_mode, exist_ok=True)
    launched: list[LaunchedJob] = []
    for job in launch_plan.jobs:
        provider = _provider(launch_plan, job)
        provider.script_dir = str(jobs_dir.absolute())
        body_path = write_body(jobs_dir.absolute(), f"{job.ids[0]}.sh", job.body,
                               registry.file_mode | 0o100)
        try:
            # The job runs the body only if it is still the one written here (see jobscript).
            job_id = provider.submit(run_command(body_path, job.body), 1,
                                     job_name=_job_name(job))
        except SubmitException as exc:
            done = ", ".join(j.job_id for j in launched)
            detail = " ".join(str(getattr(exc, "stderr", "") or exc).split())[:300]
            raise LaunchError(f"{type(provider).__name__} could not submit the pilot job: "
                              f"{detail}" + (f" (already submitted: {done})" if done else "")
                              ) from None
        if not job_id:
            raise LaunchError(f"{type(provider).__name__} returned no job id")
        slurm = _is_slurm(provider)
        if slurm:
            from nerschat.slurm import job_id_problem

            problem = job_id_problem(str(job_id))
            if problem:
                raise LaunchError(f"sbatch answered {problem}; check the job queue")
        output = provider.resources.get(job_id, {}).get("job_stdout_path") or \
            provider.resources.get(job_id, {}).get("script_path")
        publish_pending(registry, job, str(job_id) if slurm else None,
                        launch_plan.site.name, launch_plan.launch_id, output)
        launched.append(LaunchedJob(str(job_id), list(job.ids), registry, slurm, body_path,
                                    provider))
    return launched


def publish_pending(registry: Registry, job: PlannedJob, slurm_job_id: str | None, site: str,
                    launch_id: str, job_output: str | None = None) -> None:
    """One `pending` entry per replica, unless its pilot already published its own."""
    now = time.time()
    host = os.uname().nodename
    for slot, (replica, endpoint_id) in enumerate(zip(job.replicas, job.ids)):
        current = registry.get(endpoint_id)
        if current is not None and current.state != "pending":
            continue  # the job started faster than we could write
        registry.publish(Endpoint(
            id=endpoint_id, kind=replica.kind or ENGINE_KINDS.get(replica.engine, "llm"),
            engine=replica.engine, model=replica.served, url="", state="pending",
            api_key=None, pid=0, host=host, slurm_job_id=slurm_job_id, heartbeat_at=now,
            ttl=PENDING_TTL, started_at=now,
            extra={"launch": launch_id, "site": site, "slot": slot, "gpus": replica.gpus,
                   "job_output": job_output},
        ))


def launch(engine: str | None = None, model: str | None = None, replicas: int = 1, *,
           gpus_per_replica: int | None = None, pack_specs: Sequence[str] = (),
           site: str | None = None, registry: Registry | str | None = None,
           image: str | None = None, extra_args: Sequence[str] = (), check: bool = True,
           **kwargs: Any) -> list[LaunchedJob]:
    """Submit `replicas` pilots of `engine`/`model` (or the `pack_specs`) and return the jobs.

    `gpus_per_replica` defaults to 1 for vllm/tei on a site with GPUs, else 0. Other keyword
    arguments (`account`, `qos`, `walltime`, `constraint`, `ttl`, `drain_before`) go to
    `plan`. The jobs outlive the caller; `LaunchedJob.stop()` drains or cancels them.
    """
    reg = registry if isinstance(registry, Registry) else Registry(registry)
    members = build_replicas(engine, model, replicas, gpus_per_replica, pack_specs,
                             resolve_site(site), image=image, extra_args=tuple(extra_args))
    return submit(plan(members, site=site, registry=reg, check=check, **kwargs))


def build_replicas(engine: str | None, model: str | None, replicas: int,
                   gpus_per_replica: int | None, pack_specs: Sequence[str], module: ModuleType,
                   *, image: str | None = None, extra_args: tuple[str, ...] = (),
                   kind: Kind | None = None, served_name: str | None = None,
                   options: tuple[str, ...] = ()) -> list[Replica]:
    """The replicas asked for: `replicas` copies of engine/model, plus each `--pack` spec."""
    members = [parse_pack(spec) for spec in pack_specs]
    if engine or model:
        if not (engine and model):
            raise UsageError("pass both --engine and --model (or use --pack)")
        if replicas < 1:
            raise UsageError(f"--replicas must be at least 1, got {replicas}")
        if gpus_per_replica is None:
            gpus = site_of(module, engine).gpus_per_node
            gpus_per_replica = 1 if gpus and engine in ("vllm", "tei") else 0
        members += [Replica(engine, model, gpus_per_replica, image=image, kind=kind,
                            served_name=served_name, options=options, extra_args=extra_args)
                    for _ in range(replicas)]
    return members


def queued_job_groups(registry: Registry, targets: Sequence[str]) -> dict[str, list[str]]:
    """Jobs not started yet among `targets`: job id -> the target ids in it.

    A job counts when every registry entry recording it is `pending` (none of its pilots has
    started) and all of them are among `targets` (one `stop` never cancels a job that also
    serves endpoints it was not asked to stop).
    """
    wanted = set(targets)
    by_job: dict[str, list[Endpoint]] = {}
    for entry in registry.scan().entries:
        if entry.slurm_job_id:
            by_job.setdefault(entry.slurm_job_id, []).append(entry)
    return {job: sorted(e.id for e in members) for job, members in sorted(by_job.items())
            if all(e.state == "pending" and e.id in wanted for e in members)}


def cancel_jobs(job_ids: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """`scancel` the given pilot jobs that are still queued or running, and ours.

    Returns (cancelled, gone, refused): jobs cancelled, jobs no longer in the queue, and one
    line per job left alone (another user's, not a nerschat job). Job ids come from registry
    entries, which others may write: a job is cancelled only if `squeue` shows it with this
    user as owner and a nerschat job name. LaunchError when SLURM cannot be asked or
    `scancel` fails.
    """
    import getpass

    from nerschat import slurm

    if not job_ids:
        return [], [], []
    queue = slurm.queued_jobs(job_ids)
    if queue is None:
        raise LaunchError(f"cannot ask SLURM about job(s) {', '.join(job_ids)} (squeue did not "
                          "answer): nothing cancelled; retry, or scancel them yourself")
    me = getpass.getuser()
    cancel, gone, refused = [], [], []
    for job in job_ids:
        queued = queue.get(job)
        problem = slurm.job_id_problem(job)
        if problem:  # registry entries with one are refused; never read as gone
            refused.append(f"{problem}: not cancelled")
        elif queued is None:
            gone.append(job)
        elif queued.user != me:
            refused.append(f"job {job} belongs to {queued.user or 'another user'}: not cancelled")
        elif not queued.name.startswith("nerschat"):
            refused.append(f"job {job} ({queued.name}) is not a nerschat pilot job: not "
                           "cancelled")
        else:
            cancel.append(job)
    problem = slurm.scancel(cancel)
    if problem:
        raise LaunchError(problem)
    return cancel, gone, refused


def cancel_pending(registry: Registry, targets: Sequence[str]) -> list[str]:
    """Cancel the queued jobs whose every entry is `pending` and among `targets`.

    Their entries are removed (also those of jobs already gone from the queue); a job with a
    started pilot is left to drain. Returns the job ids cancelled; LaunchError if SLURM cannot
    be asked, `scancel` fails, or a job is not ours to cancel.
    """
    groups = queued_job_groups(registry, targets)
    cancelled, gone, refused = cancel_jobs(list(groups))
    for job in cancelled + gone:
        for endpoint_id in groups[job]:
            registry.remove(endpoint_id)
    if refused:
        raise LaunchError("; ".join(refused))
    return cancelled


def forget_gone(registry: Registry) -> list[str]:
    """Remove `pending` entries whose SLURM job left the queue without starting its pilot.

    (Cancelled by hand, refused by the scheduler.) Returns the ids removed; one `squeue` call;
    when `squeue` cannot answer nothing is removed.
    """
    from nerschat.slurm import queued_jobs

    pending = [e for e in registry.scan().entries if e.state == "pending" and e.slurm_job_id]
    if not pending:
        return []
    queue = queued_jobs({e.slurm_job_id for e in pending if e.slurm_job_id})
    if queue is None:
        return []  # cannot tell: keep them
    gone = [e.id for e in pending if e.slurm_job_id not in queue]
    for endpoint_id in gone:
        current = registry.get(endpoint_id)
        if current is not None and current.state == "pending":
            registry.remove(endpoint_id)
    return gone
