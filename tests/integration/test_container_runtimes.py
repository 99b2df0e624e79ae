"""The pilot drives each container runtime end to end (fake runtimes that record, then run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

import nerschat
from nerschat.registry import Registry

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "container_runtime.py"


@pytest.mark.parametrize("runtime", ["shifter", "podman-hpc", "apptainer"])
def test_pilot_runs_the_server_through_the_runtime(runtime: str, tmp_path: Path,
                                                   registry: Registry) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / runtime).symlink_to(FAKE)
    FAKE.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_RUNTIME_LOG": str(log)}
    pilot = subprocess.Popen(
        [sys.executable, "-m", "nerschat.cli.main", "serve", "--engine", "stub", "--model", "m1",
         "--runtime", runtime, "--image", "nerschat/stub:test", "--gpus", "3",
         "--runtime-modules", "gpu,nccl-plugin",
         "--registry", str(registry.path)], env=env)
    try:
        (endpoint,) = nerschat.wait_for_endpoints(registry, "m1", timeout=30)
        client = nerschat.connect("m1", registry=registry, wait_timeout=10)
        assert client.chat.completions.create(
            model="m1", messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=endpoint.url, api_key="nope", max_retries=0).models.list()
    finally:
        pilot.send_signal(signal.SIGTERM)
        assert pilot.wait(30) == 0
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    argv, call_env = call["argv"], call["env"]
    assert endpoint.api_key and not any(endpoint.api_key in a for a in argv)
    assert "nerschat.testing.stub_server" in argv
    if runtime == "shifter":
        assert argv[1:4] == ["--image=nerschat/stub:test", "--module=gpu,nccl-plugin",
                             "--env=CUDA_VISIBLE_DEVICES=3"]
        assert call_env["VLLM_API_KEY"] == endpoint.api_key
    elif runtime == "podman-hpc":
        assert argv[1:9] == ["run", "--rm", "--gpu", "--net", "host", "--ipc", "host", "-e"]
        assert "VLLM_API_KEY" in argv and call_env["VLLM_API_KEY"] == endpoint.api_key
        assert call_env["CUDA_VISIBLE_DEVICES"] == "3"
    else:
        assert argv[1:4] == ["exec", "--nv", "docker://nerschat/stub:test"]
        assert call_env["APPTAINERENV_VLLM_API_KEY"] == endpoint.api_key
    assert registry.scan().entries == []
