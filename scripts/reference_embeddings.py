"""Reference vectors from sentence-transformers itself (run with the engine env's python).

Usage: reference_embeddings.py MODEL_DIR IN.jsonl OUT.npy   (IN lines: {"text": ...})
Used by the tests to check that served embeddings match the library's own.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from sentence_transformers import SentenceTransformer


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    model_dir, source, target = sys.argv[1:]
    texts = [json.loads(line)["text"] for line in open(source, encoding="utf-8") if line.strip()]
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=False, convert_to_numpy=True)
    np.save(target, vectors.astype(np.float32))


if __name__ == "__main__":
    main()
