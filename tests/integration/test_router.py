"""curl through `nerschat router` to stub servers: every route, auth, unknown models."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nerschat.registry import Registry
from nerschat.testing.fleet import StubFleet, server_counters
from nerschat.testing.router import RouterProcess, running_router
from tests.conftest import make_endpoint


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, RouterProcess]]:
    """Two replicas of LLM `m1`, TEI-style embedder `e1`, and a router over them."""
    registry = Registry(tmp_path_factory.mktemp("router") / "registry")
    fleet = StubFleet(registry)
    try:
        fleet.start_ready(2, "m1")
        fleet.start_ready(1, "e1", kind="embedding", api="tei", max_model_len=512)
        with running_router(registry, None, "--wait-timeout", "20") as router:
            yield registry, router
    finally:
        fleet.stop_all()


def curl(router: RouterProcess, path: str, body: object = None, *, key: str | None = "",
         stream: bool = False) -> tuple[int, str]:
    """(status, body) of `curl` on the router; `key=""` means the router's own key."""
    argv = ["curl", "-sS", "--max-time", "30", "-w", "\n%{http_code}"]
    if stream:
        argv.append("-N")
    key = router.key if key == "" else key
    config = f'header = "Authorization: Bearer {key}"\n' if key else ""
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
    argv += ["-K", "-", router.root + path]  # the key via stdin, not argv
    out = subprocess.run(argv, input=config, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    text, _, status = out.stdout.rpartition("\n")
    return int(status), text


def test_chat_completion(served: tuple[Registry, RouterProcess]) -> None:
    _, router = served
    status, text = curl(router, "/v1/chat/completions",
                        {"model": "m1", "messages": [{"role": "user", "content": "hello there"}]})
    assert status == 200, text
    assert json.loads(text)["choices"][0]["message"]["content"] == "stub-m1 answer 0: hello there"


def test_streamed_chat_arrives_as_server_sent_events(served: tuple[Registry, RouterProcess]) -> None:
    _, router = served
    status, text = curl(router, "/v1/chat/completions",
                        {"model": "m1", "stream": True,
                         "messages": [{"role": "user", "content": "one two three"}]}, stream=True)
    assert status == 200, text
    events = [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    words = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert words == "stub-m1 answer 0: one two three"


def test_completion(served: tuple[Registry, RouterProcess]) -> None:
    _, router = served
    status, text = curl(router, "/v1/completions", {"model": "m1", "prompt": "x y z"})
    assert status == 200, text
    assert json.loads(text)["choices"][0]["text"] == "stub-m1 answer 0: x y z"


def test_embeddings_openai_and_tei_agree(served: tuple[Registry, RouterProcess]) -> None:
    _, router = served
    status, text = curl(router, "/v1/embeddings",
                        {"model": "e1", "input": ["Jupiter"], "encoding_format": "float"})
    assert status == 200, text
    openai_vector = json.loads(text)["data"][0]["embedding"]
    status, text = curl(router, "/embed", {"model": "e1", "inputs": ["Jupiter"]})
    assert status == 200, text
    assert json.loads(text)[0] == pytest.approx(openai_vector)
    status, text = curl(router, "/models/e1/embed", {"inputs": "Jupiter"})  # model in the path
    assert status == 200, text
    assert json.loads(text)[0] == pytest.approx(openai_vector)
    status, text = curl(router, "/embed", {"inputs": ["Jupiter"]})  # the only embedder
    assert status == 200, text


def test_tei_rerank(served: tuple[Registry, RouterProcess]) -> None:
    _, router = served
    status, text = curl(router, "/rerank", {"model": "e1", "query": "gas giant",
                                            "texts": ["Jupiter", "Mars", "gas giant"]})
    assert status == 200, text
    ranked = json.loads(text)
    assert sorted(r["index"] for r in ranked) == [0, 1, 2]
    assert ranked[0]["index"] == 2  # the text equal to the query scores highest


def test_models_lists_ready_models_with_kind_and_length(
        served: tuple[Registry, RouterProcess]) -> None:
    _, router = served
    status, text = curl(router, "/v1/models")
    assert status == 200, text
    cards = {card["id"]: card for card in json.loads(text)["data"]}
    assert set(cards) == {"m1", "e1"}  # not the router itself
    assert (cards["m1"]["kind"], cards["m1"]["replicas"], cards["m1"]["max_model_len"]) == (
        "llm", 2, 2048)
    assert (cards["e1"]["kind"], cards["e1"]["max_model_len"]) == ("embedding", 512)
    status, text = curl(router, "/v1/models/e1")
    assert status == 200 and json.loads(text)["kind"] == "embedding"
    assert curl(router, "/v1/models/nope")[0] == 404


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_401_without_the_router_key(served: tuple[Registry, RouterProcess],
                                    key: str | None) -> None:
    registry, router = served
    for path, body in (("/v1/models", None), ("/metrics", None),
                       ("/v1/chat/completions", {"model": "m1", "messages": []}),
                       ("/embed", {"model": "e1", "inputs": ["x"]})):
        status, text = curl(router, path, body, key=key)
        assert status == 401, (path, text)
    server_key = registry.endpoints("m1")[0].api_key
    status, _ = curl(router, "/v1/models", key=server_key)  # a server's key is not the router's
    assert status == 401
    assert curl(router, "/health", key=None)[0] == 200


def test_unknown_model_is_404_at_once(served: tuple[Registry, RouterProcess]) -> None:
    _, router = served  # the router waits up to 20 s for models that are starting
    started = time.monotonic()
    status, text = curl(router, "/v1/chat/completions",
                        {"model": "nobody-serves-this", "messages": [{"role": "user", "content": "x"}]})
    assert status == 404, text
    assert time.monotonic() - started < 5
    assert "nobody-serves-this" in json.loads(text)["error"]["message"]


def test_a_starting_model_waits_instead_of_404(served: tuple[Registry, RouterProcess],
                                               tmp_path: Path) -> None:
    registry, router = served
    ready = registry.endpoints("m1")[0]
    starting = make_endpoint(id="late.1", model="late", url=ready.url, api_key=ready.api_key,
                             state="starting")
    registry.publish(starting)
    try:
        def flip() -> None:
            time.sleep(2.0)
            starting.state = "ready"
            starting.heartbeat_at = time.time()
            registry.publish(starting)

        import threading

        flipper = threading.Thread(target=flip)
        flipper.start()
        status, text = curl(router, "/v1/chat/completions",
                            {"model": "late", "messages": [{"role": "user", "content": "x"}]})
        flipper.join()
    finally:
        registry.remove("late.1")
    # The stub behind it serves `m1` and refuses other names: reaching it proves the wait.
    assert status == 404 and "does not exist" in text, text


def test_metrics_count_requests_per_model_and_endpoint(
        served: tuple[Registry, RouterProcess]) -> None:
    registry, router = served
    for _ in range(4):
        curl(router, "/v1/completions", {"model": "m1", "prompt": "count me"})
    status, text = curl(router, "/metrics")
    assert status == 200
    lines = text.splitlines()
    requests = [line for line in lines if line.startswith("nerschat_router_requests_total{")
                and 'model="m1"' in line and 'route="/v1/completions"' in line]
    assert requests and sum(float(line.rsplit(" ", 1)[1]) for line in requests) >= 4
    for endpoint in registry.endpoints("m1"):
        assert f'nerschat_router_in_flight{{endpoint="{endpoint.id}",model="m1"}} 0.0' in lines
        assert any(line.startswith("nerschat_router_upstream_seconds_count{")
                   and endpoint.id in line for line in lines)
        assert server_counters(endpoint)["nerschat_stub_requests_served_total"] > 0


def test_the_unchanged_openai_sdk_works_through_the_router(
        served: tuple[Registry, RouterProcess]) -> None:
    import openai

    _, router = served
    client = openai.OpenAI(base_url=router.url, api_key=router.key, max_retries=0)
    assert {m.id for m in client.models.list()} == {"m1", "e1"}
    stream = client.chat.completions.create(
        model="m1", stream=True, messages=[{"role": "user", "content": "streamed reply"}])
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "stub-m1 answer 0: streamed reply"
    vectors = client.embeddings.create(model="e1", input=["a", "b"])  # base64 on the wire
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=router.url, api_key="wrong", max_retries=0).models.list()
