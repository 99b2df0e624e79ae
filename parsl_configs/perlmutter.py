"""The `perlmutter` site config: nerschat ships it as `nerschat.sites.perlmutter`.

`nerschat launch --site perlmutter` and `--config perlmutter` use the packaged module from any directory.
To adapt it, copy the packaged file (`python -c "import nerschat.sites.perlmutter as m;
print(m.__file__)"`) next to your workflow, edit the copy and pass its path.
"""

from nerschat.sites.perlmutter import gpus_per_job, make_config, pilot_provider, site

__all__ = ["make_config", "pilot_provider", "site", "gpus_per_job"]
