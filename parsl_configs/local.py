"""The `local` site config: nerschat ships it as `nerschat.sites.local`.

`nerschat launch --site local` and `--config local` use the packaged module from any directory.
To adapt it, copy the packaged file (`python -c "import nerschat.sites.local as m;
print(m.__file__)"`) next to your workflow, edit the copy and pass its path.
"""

from nerschat.sites.local import make_config, pilot_provider, site

__all__ = ["make_config", "pilot_provider", "site"]
