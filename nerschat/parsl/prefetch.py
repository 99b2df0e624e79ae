"""Download a model's weights into the cache the pilots read, on a login node, once.

Perlmutter pilots run offline (`HF_HUB_OFFLINE=1`: N pilots must not download at once), so
the weights have to be in `HF_HOME` before `nerschat launch` queues them; this is that step.
`huggingface_hub` reads the token itself from `$HF_TOKEN` or its token file: it never goes
on a command line.
"""

from __future__ import annotations

from pathlib import Path

from nerschat.errors import FailureError, UsageError

# Files neither vLLM nor TEI load on GPUs: skipping them saves tens of GB for some repos
# (e.g. Llama's `original/` consolidated checkpoints).
IGNORED = ["original/*", "*.pth", "*.gguf", "*.onnx", "onnx/*", "openvino/*", "*.msgpack",
           "*.h5", "*.ot", "*.mlmodel", "coreml/*"]


def prefetch(model: str, hf_home: Path, *, revision: str | None = None,
             all_files: bool = False) -> Path:
    """Download `model` (a Hub repo id) into `hf_home/hub`; return its snapshot directory.

    Raises
    ------
    UsageError
        `huggingface_hub` is missing (names the install command), or the model is a path.
    FailureError
        the download failed (gated model without a token, no network, disk full, ...).
    """
    if model.startswith(("/", "./", "~", "local:")):
        raise UsageError(f"{model} is not a Hub model id: nothing to download")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise UsageError("huggingface_hub is not installed: pip install 'nerschat[prefetch]' "
                         f"(or run `HF_HOME={hf_home} hf download {model}`)") from None
    try:
        path = snapshot_download(repo_id=model, revision=revision,
                                 cache_dir=str(hf_home / "hub"),
                                 ignore_patterns=None if all_files else IGNORED)
    except Exception as exc:  # noqa: BLE001 - the hub raises many kinds; report one line
        reason = " ".join(str(exc).split())[:300]
        raise FailureError(f"downloading {model} into {hf_home} failed: {type(exc).__name__}: "
                           f"{reason} (gated model? set $HF_TOKEN)") from None
    return Path(path)


PULL_TIMEOUT = 3600.0
"""A first pull of a multi-GB image can take many minutes on a busy login node."""


def pull_image(runtime: str, image: str | None) -> str | None:
    """Make `image` available to the site's container `runtime`, once, on a login node.

    Returns what was done (`already pulled`, `pulled`), or None when the runtime needs no
    pull (none, apptainer). Shifter: `shifterimg pull IMAGE` unless `shifterimg images` lists
    it; podman-hpc: `podman-hpc pull IMAGE` likewise. FailureError with the command's last
    line when the pull fails.
    """
    import subprocess

    from nerschat.parsl.preflight import PreflightError, check_image

    commands = {"shifter": ["shifterimg", "pull"], "podman-hpc": ["podman-hpc", "pull"]}
    if image is None or runtime not in commands:
        return None
    try:
        check_image(runtime, image)
        return "already pulled"
    except PreflightError as exc:
        if "not pulled" not in str(exc):
            raise
    argv = [*commands[runtime], image]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=PULL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FailureError(f"`{' '.join(argv)}` failed: {exc}") from None
    if out.returncode != 0:
        lines = (out.stderr or out.stdout).strip().splitlines()
        raise FailureError(f"`{' '.join(argv)}` failed: {lines[-1] if lines else out.returncode}")
    return "pulled"
