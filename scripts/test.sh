#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, the local SLURM cluster, then pytest
# (unit, integration on real SLURM + Parsl, real-engine tests on the local vLLM).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not slow"`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
bash scripts/bootstrap.sh
if ! command -v tmux >/dev/null; then  # the terminal-chat test drives `nerschat chat` in tmux
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tmux >/dev/null
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    # the router's chat page is tested in a real headless browser
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
bash scripts/local-slurm.sh start --gpus 4
eval "$(bash scripts/local-slurm.sh env)"
export PATH="$repo/.venv/bin:$PATH"
# Two workers (pytest-xdist): the SLURM scenarios run one at a time in one of them (they share
# the cluster's 4 GPUs and mostly wait), the real-vLLM tests in the other, the unit tests
# wherever a worker is free (groups: tests/conftest.py). `-n 0` runs everything in one process.
# pytest exits 5 when it collected no test: that is a failure here, as any non-zero exit.
exec python -m pytest -ra --durations=30 -n 2 --dist loadgroup "$@"
