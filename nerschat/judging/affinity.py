"""Prefix affinity: requests that share a prompt prefix should reach the same replica.

A judge sends several requests per item that begin with the same tokens: the reasoning
request and the forced choice that extends it, and for a pair both presentation orders
(sharing the system prompt and the question). vLLM's automatic prefix caching reuses the KV
blocks of a shared prefix only on the replica that computed them, so these requests carry

    X-Nerschat-Affinity: <key>

an opaque, header-safe key (16 lowercase hex digits). Semantics for a transport or router:
requests with equal keys for the same model should go to the same ready endpoint while it
stays ready and is not overloaded (e.g. rendezvous hashing of the key over the ready
endpoints, falling back to least-loaded when the chosen one is cooling down or full); a
request without the header is routed as before. The header is a routing hint only: servers
ignore it, and it carries nothing secret (a hash of the task name and item id).
"""

from __future__ import annotations

import hashlib

AFFINITY_HEADER = "X-Nerschat-Affinity"


def affinity_key(*parts: str) -> str:
    """A stable 16-hex-digit key for the given parts (e.g. task name and item id)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8)
    return digest.hexdigest()


def affinity_headers(*parts: str) -> dict[str, str]:
    """`{AFFINITY_HEADER: key}`, ready for `extra_headers=` / `default_headers=`."""
    return {AFFINITY_HEADER: affinity_key(*parts)}
