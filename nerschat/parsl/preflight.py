"""Checks `nerschat launch` runs before anything queues, each failing with a one-line fix.

A job that waits hours in the queue and then finds no image, no weights or a registry the
node cannot see wastes the wait and the allocation. Each check here raises `PreflightError`
naming what is wrong and the command that fixes it; `--no-check` skips them all.

Checks that ask the system (`shifterimg images`, `podman-hpc images`) run those commands with
a timeout; everything else only looks at arguments and the file system.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path

from nerschat.errors import UsageError
from nerschat.parsl.config import Site, walltime_seconds

# Paths that only the node itself sees: a registry there is invisible to compute nodes.
NODE_LOCAL_PREFIXES = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/local")
NODE_LOCAL_FS_TYPES = ("tmpfs", "ramfs")
ENGINES_WITH_WEIGHTS = ("vllm", "tei")
COMMAND_TIMEOUT = 120.0


class PreflightError(UsageError):
    """A launch that would fail after queuing: what is wrong and the command that fixes it."""


def check_walltime(walltime: str, drain_before: float) -> int:
    """The walltime in seconds; it must be longer than the drain margin."""
    seconds = walltime_seconds(walltime)
    if seconds <= drain_before:
        raise PreflightError(
            f"walltime {walltime} is not longer than the drain margin ({drain_before:.0f} s): "
            "the pilots would drain at once; pass a longer --walltime")
    return seconds


def check_gpus(engine: str, gpus_per_replica: int, site: Site) -> None:
    """GPUs per replica fit a node and suit the engine (TEI: one GPU per process)."""
    if engine == "tei" and gpus_per_replica > 1:
        raise PreflightError(
            f"TEI serves one model on one GPU per process, asked {gpus_per_replica}: pass "
            "--gpus-per-replica 1 and more --replicas")
    if site.gpus_per_node and gpus_per_replica > site.gpus_per_node:
        raise PreflightError(
            f"{gpus_per_replica} GPUs per replica do not fit a {site.name} node "
            f"({site.gpus_per_node} GPUs): pass --gpus-per-replica {site.gpus_per_node} or less")
    if site.cluster and not site.gpus_per_node and gpus_per_replica:
        raise PreflightError(
            f"site {site.name} has no GPUs per node configured, asked {gpus_per_replica} per "
            "replica: set $NERSCHAT_GPUS_PER_NODE (or pass --gpus-per-replica 0)")


def _mount_type(path: Path) -> str | None:
    """File-system type of the mount holding `path` (Linux /proc/self/mounts), or None."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    best, kind = "", None
    target = str(path)
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        mount = parts[1].replace("\\040", " ")
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) > len(best):
            best, kind = mount, parts[2]
    return kind


def check_registry_shared(registry: Path, site: Site) -> None:
    """For a cluster site the registry must be on a file system the compute nodes see."""
    if not site.cluster:
        return
    path = registry.expanduser().absolute()
    local_prefix = next((p for p in NODE_LOCAL_PREFIXES
                         if str(path) == p or str(path).startswith(p + "/")), None)
    fs_type = _mount_type(path)
    if local_prefix or fs_type in NODE_LOCAL_FS_TYPES:
        where = local_prefix or fs_type
        raise PreflightError(
            f"registry {path} is on a node-local file system ({where}) that {site.name} compute "
            "nodes do not see: pass --registry on a shared one (e.g. ~/.nerschat/registry)")


def normalize_image(image: str) -> str:
    """`docker:repo:tag`, `docker.io/library/repo` and a missing tag all as `repo:tag`."""
    image = image.strip()
    for prefix in ("docker:", "docker://", "localhost/", "docker.io/", "library/"):
        if image.startswith(prefix):
            image = image[len(prefix):]
    if image.startswith("library/"):
        image = image[len("library/"):]
    last = image.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        image += ":latest"
    return image


def _run(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise PreflightError(
            f"{argv[0]} not found on PATH, so the image cannot be checked: run on a node of "
            "the site, or pass --no-check") from None
    except subprocess.TimeoutExpired:
        raise PreflightError(f"`{shlex.join(argv)}` did not answer in {COMMAND_TIMEOUT:.0f} s: "
                             "retry, or pass --no-check") from None
    if out.returncode != 0:
        reason = (out.stderr or out.stdout).strip().splitlines()
        raise PreflightError(f"`{shlex.join(argv)}` failed ({reason[-1] if reason else out.returncode}):"
                             " fix it, or pass --no-check")
    return out.stdout


def check_image(runtime: str, image: str | None) -> None:
    """The image is where the runtime looks for it.

    Shifter and podman-hpc run only pulled images; Apptainer a SIF file or a registry reference.
    """
    if runtime == "none" or image is None:
        return
    wanted = normalize_image(image)
    if runtime == "shifter":
        listed = {normalize_image(line.split()[-1])
                  for line in _run(["shifterimg", "images"]).splitlines() if line.split()}
        if wanted not in listed:
            raise PreflightError(f"image {image} is not pulled for Shifter: run "
                                 f"`shifterimg pull {image}` (takes minutes), then launch again")
    elif runtime == "podman-hpc":
        output = _run(["podman-hpc", "images", "--format", "{{.Repository}}:{{.Tag}}"])
        if wanted not in {normalize_image(line) for line in output.split()}:
            raise PreflightError(f"image {image} is not pulled for podman-hpc: run "
                                 f"`podman-hpc pull {image}`, then launch again")
    elif runtime == "apptainer":
        looks_like_path = image.endswith(".sif") or image.startswith(("/", "./", "~"))
        if looks_like_path and not Path(image).expanduser().is_file():
            raise PreflightError(f"Apptainer image {image} not found: build it with "
                                 f"`apptainer pull {image} docker://IMAGE`, or pass its path")


def expand_path(value: str, what: str) -> Path:
    """`value` with `~` and `$VARS` expanded here; PreflightError if a variable is unset."""
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise PreflightError(f"{what} {value}: ${unset[0]} is not set here; set it (or HF_HOME) "
                             "to the directory the compute nodes use")
    return Path(expanded)


def weights_cached(hf_home: Path, model: str) -> bool:
    """The model's files are in the Hugging Face cache under `hf_home` (`hub/models--o--n`)."""
    repo = hf_home / "hub" / ("models--" + model.replace("/", "--"))
    snapshots = repo / "snapshots"
    try:
        return any((snap / "config.json").exists() or any(snap.iterdir())
                   for snap in snapshots.iterdir() if snap.is_dir())
    except OSError:
        return False


def check_weights(engine: str, model: str, site: Site) -> None:
    """With offline pilots (`HF_HUB_OFFLINE=1`) the weights must be cached before queuing."""
    if engine not in ENGINES_WITH_WEIGHTS or not site.offline or model.startswith("local:"):
        return
    if model.startswith(("/", "./", "~")):
        if not Path(model).expanduser().exists():
            raise PreflightError(f"model path {model} does not exist here: pass the path the "
                                 "compute nodes see, on a shared file system")
        return
    hf_home = expand_path(site.hf_home or os.environ.get("HF_HOME") or "~/.cache/huggingface",
                          "HF_HOME")
    if not weights_cached(hf_home, model):
        raise PreflightError(
            f"weights of {model} are not in {hf_home} and {site.name} pilots run offline: "
            f"run `nerschat prefetch {model} --hf-home {hf_home}` on a login node first "
            "(token from $HF_TOKEN)")


def check_python_env(site: Site) -> None:
    """The environment the jobs activate has nerschat installed (a job would stop at once)."""
    if not site.python_env:
        return
    env = expand_path(site.python_env, "NERSCHAT_ENV")
    if not (env / "bin" / "nerschat").exists():
        raise PreflightError(
            f"NERSCHAT_ENV {env} has no bin/nerschat, so the {site.name} jobs could not start "
            f"their pilots: install it there (`{env}/bin/pip install nerschat`) or point "
            "NERSCHAT_ENV at the venv that has it")
