"""Where the Hydra configs are: inside the package, so a wheel or a non-editable install ships them.

CONF_DIR is a real directory in every install that unpacks the package (pip, wheels, editable); Hydra's
entry points compose from it by path, and `CONF_SEARCH_PATH` names the same place the `pkg://` way.
REPO_ROOT is the checkout above `src/` and exists only in a source tree (scripts, tests, experiments).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CONF_DIR = PACKAGE_DIR / "conf"
CONF_SEARCH_PATH = "pkg://warmup_lab.conf"
REPO_ROOT = PACKAGE_DIR.parents[1]

__all__ = ["PACKAGE_DIR", "CONF_DIR", "CONF_SEARCH_PATH", "REPO_ROOT"]
