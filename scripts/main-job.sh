#!/usr/bin/env bash
# The main job on a fresh machine: set-up, then a batch judging run and an embedding run, each
# with a local real vLLM pilot under the local Parsl config. Outputs go to ./out/.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/bootstrap.sh
export PATH="$repo/.venv/bin:$PATH"
export NERSCHAT_REGISTRY="${NERSCHAT_REGISTRY:-$repo/out/registry}"
mkdir -p out
python pipelines/batch_judge.py examples/data/judge_sample.jsonl -o out/judged.jsonl \
    --config parsl_configs/local.py --engine vllm --model local:gemma-3-270m --pilots 1 \
    --reasoning-tokens "${NERSCHAT_DEMO_REASONING_TOKENS:-24}" --shuffle
python pipelines/embed_corpus.py examples/data/corpus.jsonl -o out/corpus-embeddings \
    --config parsl_configs/local.py --engine vllm --model local:minilm --pilots 1 \
    --query "Which planet is red because of iron oxide dust?"
