"""Container runtimes that wrap an engine's server command: none, shifter, podman-hpc, apptainer.

Secrets travel in the process environment, never in argv: argv is world-readable through
/proc and `ps` on a shared node. Each runtime says how its container picks them up
(Shifter passes the environment through; podman-hpc copies a named variable with `-e NAME`;
Apptainer reads `APPTAINERENV_NAME`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol

from nerschat.errors import UsageError
from nerschat.pilot.engines.base import ServerLaunch, named


class ContainerError(UsageError, ValueError):
    """A runtime that cannot run what was asked (missing image, unknown runtime)."""


@dataclass(frozen=True)
class Command:
    """A wrapped command: argv to run and variables to add to the pilot's environment."""

    argv: list[str]
    env: dict[str, str]  # to add to the pilot's own environment


class ContainerRuntime(Protocol):
    """Wraps a server command to run inside a container.

    `server_in_session`: the server process stays a descendant of the command the pilot
    starts (in its session), so the pilot can find the server's listening socket in /proc.
    False for runtimes whose containers are started by a daemon (podman's conmon).
    """

    name: str
    needs_image: bool
    server_in_session: bool

    def wrap(self, launch: ServerLaunch, image: str | None) -> Command:
        """The command that runs `launch` in `image`, secrets kept off its argv."""
        ...

    def with_modules(self, modules: tuple[str, ...]) -> ContainerRuntime:
        """This runtime loading the site's `modules` (Shifter's `--module=`); others ignore them."""
        ...


class NoContainer:
    """No container: the server runs directly, secrets in its environment."""

    name = "none"
    needs_image = False
    server_in_session = True

    def with_modules(self, modules: tuple[str, ...]) -> ContainerRuntime:
        """The same runtime: it has no modules to load."""
        return self

    def wrap(self, launch: ServerLaunch, image: str | None) -> Command:
        """The server's own command, secrets in its environment."""
        return Command(list(launch.argv), {**launch.env, **launch.secret_env})


class Shifter:
    """NERSC Shifter. It does not run the image ENTRYPOINT, so the argv names the program.

    `modules` (`--module=`) are the site's (Perlmutter: `gpu,nccl-plugin`, see
    `nerschat.sites.perlmutter`); none unless a site or `nerschat serve --runtime-modules`
    names them.
    """

    name = "shifter"
    needs_image = True
    server_in_session = True

    def __init__(self, modules: tuple[str, ...] = ()):
        self.modules = tuple(modules)

    def with_modules(self, modules: tuple[str, ...]) -> ContainerRuntime:
        """Shifter loading `modules` (`--module=a,b`)."""
        return Shifter(tuple(modules))

    def wrap(self, launch: ServerLaunch, image: str | None) -> Command:
        """The runtime's command around the server's."""
        argv = ["shifter", f"--image={image}"]
        if self.modules:
            argv.append(f"--module={','.join(self.modules)}")
        # Non-secret settings go through --env because the image's ENV would override the
        # inherited value; secrets are inherited from the environment only.
        argv += [f"--env={k}={v}" for k, v in sorted(launch.env.items())]
        return Command(argv + list(launch.argv), {**launch.env, **launch.secret_env})


class PodmanHpc:
    """NERSC podman-hpc with host networking; secrets copied by name with `-e NAME`."""

    name = "podman-hpc"
    needs_image = True
    server_in_session = False  # conmon, not our command, is the container's parent

    def with_modules(self, modules: tuple[str, ...]) -> ContainerRuntime:
        """The same runtime: it has no modules to load."""
        return self

    def wrap(self, launch: ServerLaunch, image: str | None) -> Command:
        """The runtime's command around the server's."""
        argv = ["podman-hpc", "run", "--rm", "--gpu", "--net", "host", "--ipc", "host"]
        argv += ["-e", "CUDA_VISIBLE_DEVICES"]
        for key in sorted({**launch.env, **launch.secret_env}):
            if key != "CUDA_VISIBLE_DEVICES":
                argv += ["-e", key]  # name only: podman copies the value from our environment
        hf_home = launch.env.get("HF_HOME")
        if hf_home:
            argv += ["-v", f"{hf_home}:{hf_home}"]
        argv += ["--entrypoint", launch.argv[0], str(image), *launch.argv[1:]]
        return Command(argv, {**launch.env, **launch.secret_env})


class Apptainer:
    """Apptainer/Singularity with `--nv`; variables reach the container as APPTAINERENV_*."""

    name = "apptainer"
    needs_image = True
    server_in_session = True

    def with_modules(self, modules: tuple[str, ...]) -> ContainerRuntime:
        """The same runtime: it has no modules to load."""
        return self

    def wrap(self, launch: ServerLaunch, image: str | None) -> Command:
        """`apptainer exec --nv` of the image (a docker:// URI unless a path or URI)."""
        assert image is not None
        source = image if ("://" in image or os.path.exists(image)) else f"docker://{image}"
        env = {**launch.env, **launch.secret_env}
        env.update({f"APPTAINERENV_{k}": v for k, v in env.items()})
        return Command(["apptainer", "exec", "--nv", source, *launch.argv], env)


RUNTIMES: dict[str, ContainerRuntime] = {
    "none": NoContainer(),
    "shifter": Shifter(),
    "podman-hpc": PodmanHpc(),
    "apptainer": Apptainer(),
}


def get_runtime(name: str, modules: tuple[str, ...] = ()) -> ContainerRuntime:
    """The runtime called `name`, loading `modules` where it has any (Shifter).

    ContainerError naming the choices for an unknown name, or for a module name that is not a
    plain word.
    """
    bad = [m for m in modules if not m or not all(c.isalnum() or c in "-_." for c in m)]
    if bad:
        raise ContainerError(f"runtime module {bad[0]!r} is not a module name (e.g. gpu, "
                             "nccl-plugin)")
    runtime = named(RUNTIMES, name, "container runtime", ContainerError)
    return runtime.with_modules(tuple(modules)) if modules else runtime
