#!/usr/bin/env bash
# Set up everything on a fresh machine of this kind (idempotent, quick on a second run):
# the project venv (.venv) with nerschat and its test tools, and the local real engine.
#   NERSCHAT_SKIP_ENGINE=1  skip the local vLLM engine (stub-only work)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
start=$SECONDS
if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
if ! .venv/bin/python -c "import nerschat, pytest, pyarrow, pytest_asyncio, pytest_timeout" 2>/dev/null \
    || [[ pyproject.toml -nt .venv/.nerschat-installed ]]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]" 2>&1 \
        | { grep -v "^WARNING: Location" || true; }
    touch .venv/.nerschat-installed
fi
if [[ "${NERSCHAT_SKIP_ENGINE:-0}" != "1" ]]; then
    bash scripts/setup-local-engine.sh
fi
echo "bootstrap done in $((SECONDS - start)) s"
