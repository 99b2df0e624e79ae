"""One client for every model: chat with the LLM and embed with the embedding model.

`nerschat.connect()` without a model routes each request by its own `model` field, as a
router in front of several servers would.

    nerschat serve --engine vllm --model local:gemma-3-270m &
    nerschat serve --engine vllm --model local:minilm &
    python examples/all.py
"""

from __future__ import annotations

import nerschat

client = nerschat.connect(wait_timeout=600)
nerschat.wait_for_endpoints(nerschat.Registry(), kind="llm", timeout=600)
nerschat.wait_for_endpoints(nerschat.Registry(), kind="embedding", timeout=600)
llm = nerschat.endpoints(kind="llm")[0].model
embedder = nerschat.endpoints(kind="embedding")[0].model

reply = client.chat.completions.create(
    model=llm, max_tokens=40, messages=[{"role": "user", "content": "Name a gas giant."}])
print(f"{llm}: {reply.choices[0].message.content}")
vectors = client.embeddings.create(model=embedder, input=["Jupiter", "Saturn"])
print(f"{embedder}: {len(vectors.data)} vectors of dimension {len(vectors.data[0].embedding)}")
