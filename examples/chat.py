"""Chat with whatever LLM the registry has, streaming the answer (see also `nerschat chat`).

    nerschat serve --engine vllm --model local:gemma-3-270m &     # or a SLURM job
    python examples/chat.py "Tell me about Perlmutter."
"""

from __future__ import annotations

import sys

import nerschat

question = " ".join(sys.argv[1:]) or "What is a supercomputer used for?"
client = nerschat.connect(kind="llm", wait_timeout=600)  # waits until a server is ready
model = nerschat.endpoints(kind="llm")[0].model

stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": question}], stream=True, max_tokens=128)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
print()
