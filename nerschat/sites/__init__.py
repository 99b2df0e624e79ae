"""The site configs that ship with nerschat: `local`, `slurm`, `perlmutter`.

Each is a Parsl site config module (the contract is in `nerschat.parsl.config`):
`make_config()`, `site(engine)`, `pilot_provider(request)`. `nerschat launch --site NAME`
and `--config NAME` use them by name from any directory; to adapt one, copy its file
(`python -c "import nerschat.sites.perlmutter as m; print(m.__file__)"`) and pass the copy's
path (`--site ./my_site.py`). `parsl_configs/` in the source tree re-exports them.
"""

from __future__ import annotations

SITES = ("perlmutter", "slurm", "local")
"""Names of the packaged site configs (`nerschat.sites.NAME`)."""
