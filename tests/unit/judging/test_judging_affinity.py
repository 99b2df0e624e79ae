from __future__ import annotations

from nerschat.judging.affinity import AFFINITY_HEADER, affinity_headers, affinity_key
from nerschat.pilot.local_engine import LOCAL_MODELS


def test_affinity_key_is_stable_header_safe_and_distinct() -> None:
    key = affinity_key("judge-pairwise", "item\n1 é")
    assert key == affinity_key("judge-pairwise", "item\n1 é") and len(key) == 16
    assert all(c in "0123456789abcdef" for c in key)
    assert key != affinity_key("judge-pairwise", "item\n2 é")
    assert affinity_key("a", "bc") != affinity_key("ab", "c")
    assert affinity_headers("x") == {AFFINITY_HEADER: affinity_key("x")}


def test_local_llm_kv_blocks_are_short_enough_for_judge_prompts() -> None:
    # prefix caching reuses only full KV blocks; vLLM's CPU default (128 tokens) is longer
    # than a typical judge prompt, which left the cache at a 0% hit rate
    args = LOCAL_MODELS["gemma-3-270m"].vllm_args
    assert "--block-size" in args
    assert int(args[args.index("--block-size") + 1]) <= 32
