"""Fake `sbatch`, `sacct`, `squeue`, `scancel` and `shifterimg` on PATH (the PSI/J trick).

`install(bin_dir, log)` writes small shell scripts that record each call (one line: the
command and its arguments) in `log`; `sbatch` also copies the script it was given to
`<log>.script.N` and answers `Submitted batch job 4242` (then 4243, ...). `shifterimg images`
lists the images in $FAKE_SHIFTER_IMAGES (comma-separated) in Shifter's own format; `squeue`
prints the job ids in $FAKE_SQUEUE_IDS (space-separated), one a line, or the lines of
$FAKE_SQUEUE_LINES as given (`\n` between lines) when that is set.
"""

from __future__ import annotations

import os
from pathlib import Path

SCRIPTS = {
    "sbatch": """#!/bin/bash
echo "sbatch $*" >> "$FAKE_SLURM_LOG"
n=$(grep -c '^sbatch ' "$FAKE_SLURM_LOG")
cp "${@: -1}" "$FAKE_SLURM_LOG.script.$n"
echo "Submitted batch job $((4241 + n))"
""",
    "sacct": """#!/bin/bash
echo "sacct $*" >> "$FAKE_SLURM_LOG"
echo "Slurm accounting storage is disabled" >&2
exit 1
""",
    "squeue": """#!/bin/bash
echo "squeue $*" >> "$FAKE_SLURM_LOG"
if [ -n "${FAKE_SQUEUE_LINES:-}" ]; then printf '%b\n' "$FAKE_SQUEUE_LINES"; exit 0; fi
for id in ${FAKE_SQUEUE_IDS:-}; do echo "$id"; done
""",
    "scancel": """#!/bin/bash
echo "scancel $*" >> "$FAKE_SLURM_LOG"
""",
    "shifterimg": """#!/bin/bash
echo "shifterimg $*" >> "$FAKE_SLURM_LOG"
IFS=, read -r -a images <<< "${FAKE_SHIFTER_IMAGES:-}"
for image in "${images[@]}"; do
    echo "perlmutter docker     READY    2a5e0c2f4e   2026-03-21T12:52:13 $image"
done
""",
}


def install(bin_dir: Path, log: Path) -> dict[str, str]:
    """Write the fakes; return the environment changes that put them first on PATH."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, text in SCRIPTS.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    log.touch()
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM_LOG": str(log)}
