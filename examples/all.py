"""One client for every model: chat with the LLM and embed with the embedding model.

`nerschat.connect()` without a model routes each request by its own `model` field, as a
router in front of several servers would. With `--router`, the same two requests go as
plain HTTP (curl) through `nerschat router`, the one URL any language can use (the example
starts a router when none is running, and stops it again).

    nerschat serve --engine vllm --model local:gemma-3-270m &
    nerschat serve --engine vllm --model local:minilm &
    python examples/all.py            # Python, through the OpenAI SDK
    python examples/all.py --router   # curl, through the router
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import nerschat
from nerschat.router import live_routers

registry = nerschat.Registry()
nerschat.wait_for_endpoints(registry, kind="llm", timeout=600)
nerschat.wait_for_endpoints(registry, kind="embedding", timeout=600)
llm = nerschat.endpoints(kind="llm")[0].model
embedder = nerschat.endpoints(kind="embedding")[0].model


def with_sdk() -> None:
    client = nerschat.connect(wait_timeout=600)
    reply = client.chat.completions.create(
        model=llm, max_tokens=40, messages=[{"role": "user", "content": "Name a gas giant."}])
    print(f"{llm}: {reply.choices[0].message.content}")
    vectors = client.embeddings.create(model=embedder, input=["Jupiter", "Saturn"])
    print(f"{embedder}: {len(vectors.data)} vectors of dimension "
          f"{len(vectors.data[0].embedding)}")


def curl(url: str, key: str, body: dict[str, Any]) -> Any:
    """POST JSON with curl; the key goes through stdin (`-K -`), never the command line."""
    out = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "-H", "Content-Type: application/json",
         "--data-binary", json.dumps(body), "-K", "-", url],
        input=f'header = "Authorization: Bearer {key}"\n', capture_output=True, text=True,
        check=True)
    return json.loads(out.stdout)


def with_curl_through_the_router() -> None:
    started = None
    if not live_routers(registry):
        started = subprocess.Popen([sys.executable, "-m", "nerschat.cli.main", "router",
                                    "--host", "127.0.0.1"])
        while not live_routers(registry):
            time.sleep(0.2)
    try:
        router = live_routers(registry)[0]
        if router.api_key is None:
            key = os.environ[router.extra["api_key_env"]]  # a router started with --api-key-env
        else:
            key = router.api_key  # the private registry entry holds the generated key
        print(f"router: {router.url}")
        reply = curl(f"{router.url}/chat/completions", key, {
            "model": llm, "max_tokens": 40,
            "messages": [{"role": "user", "content": "Name a gas giant."}]})
        print(f"{llm}: {reply['choices'][0]['message']['content']}")
        vectors = curl(f"{router.url}/embeddings", key,
                       {"model": embedder, "input": ["Jupiter", "Saturn"],
                        "encoding_format": "float"})
        data = vectors["data"]
        print(f"{embedder}: {len(data)} vectors of dimension {len(data[0]['embedding'])}")
    finally:
        if started is not None:
            started.send_signal(signal.SIGTERM)
            started.wait()


if "--router" in sys.argv[1:]:
    with_curl_through_the_router()
else:
    with_sdk()
