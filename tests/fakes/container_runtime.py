#!/usr/bin/env python3
"""A fake `shifter` / `podman-hpc` / `apptainer`: records how it was called, then runs the
command it was given, as the real runtime would inside the container.

Installed on PATH under the runtime's name by the tests; the record goes to
$FAKE_RUNTIME_LOG (one JSON object per call: argv and the environment's names + values).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def shifter(args: list[str], env: dict[str, str]) -> list[str]:
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option.startswith("--env="):
            key, _, value = option[len("--env="):].partition("=")
            env[key] = value
    return args


def podman_hpc(args: list[str], env: dict[str, str]) -> list[str]:
    assert args.pop(0) == "run"
    entrypoint = None
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in ("-e", "-v", "--net", "--ipc", "--entrypoint"):
            value = args.pop(0)
            if option == "--entrypoint":
                entrypoint = value
            elif option == "-e" and "=" in value:
                key, _, val = value.partition("=")
                env[key] = val
    args.pop(0)  # the image
    return [entrypoint, *args] if entrypoint else args


def apptainer(args: list[str], env: dict[str, str]) -> list[str]:
    assert args.pop(0) == "exec"
    while args and args[0].startswith("--"):
        args.pop(0)
    args.pop(0)  # the image
    for key, value in list(env.items()):
        if key.startswith("APPTAINERENV_"):
            env[key[len("APPTAINERENV_"):]] = value
    return args


def main() -> None:
    name = Path(sys.argv[0]).name
    with open(os.environ["FAKE_RUNTIME_LOG"], "a") as log:
        log.write(json.dumps({"runtime": name, "argv": sys.argv, "env": dict(os.environ)}) + "\n")
    env = dict(os.environ)
    unwrap = {"shifter": shifter, "podman-hpc": podman_hpc, "apptainer": apptainer}[name]
    command = unwrap(sys.argv[1:], env)
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
