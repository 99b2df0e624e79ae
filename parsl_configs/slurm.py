"""The `slurm` site config: nerschat ships it as `nerschat.sites.slurm`.

`nerschat launch --site slurm` and `--config slurm` use the packaged module from any directory.
To adapt it, copy the packaged file (`python -c "import nerschat.sites.slurm as m;
print(m.__file__)"`) next to your workflow, edit the copy and pass its path.
"""

from nerschat.sites.slurm import make_config, pilot_provider, site

__all__ = ["make_config", "pilot_provider", "site"]
