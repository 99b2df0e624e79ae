"""Embed passages and search them, through the registry (the embedding demo).

    nerschat serve --engine vllm --model local:minilm &     # or TEI in a SLURM job
    python examples/embedding.py "Which planet is red?"
"""

from __future__ import annotations

import sys

import numpy as np

import nerschat

PASSAGES = [
    "Mars is the red planet, coloured by iron oxide dust.",
    "Jupiter is the largest planet, a gas giant with the Great Red Spot.",
    "SLURM schedules batch jobs on clusters.",
    "Parsl runs Python functions as parallel apps.",
]

query = " ".join(sys.argv[1:]) or "Which planet is red?"
client = nerschat.connect(kind="embedding", wait_timeout=600)
model = nerschat.endpoints(kind="embedding")[0].model
response = client.embeddings.create(model=model, input=[query, *PASSAGES])
vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
scores = vectors[1:] @ vectors[0]
for score, passage in sorted(zip(scores, PASSAGES), reverse=True):
    print(f"{score:.3f}  {passage}")
