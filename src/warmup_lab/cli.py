"""Command-line checks that run before Hydra composes anything.

Hydra answers an unknown config-group option (`schedule=nope`) with a multi-line dump of its search
path; a researcher needs one line that names the value and the options. Group choices in the command
line are checked against the files in conf/ here, and so is `-m` with a fixed `out=` (every job of a
multirun would share one directory); everything else is left to Hydra and the config validation of
each component.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from warmup_lab.errors import ConfigError, exit_on_user_error
from warmup_lab.paths import CONF_DIR


def _options(group: Path) -> list[str]:
    return sorted(str(p.relative_to(group).with_suffix("")) for p in group.rglob("*.yaml")
                  if not p.name.startswith("_"))


def check_group_choices(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> None:
    """Raise ConfigError for `group=option` where conf/<group>/ exists but has no <option>.yaml."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        group = conf_dir / key
        if key.startswith("hydra") or not group.is_dir() or "(" in value or "$" in value:
            continue  # plugin groups (launchers, sweepers) and sweep functions are Hydra's to check
        for option in filter(None, value.split(",")):
            if option != "null" and not (group / f"{option}.yaml").exists():
                raise ConfigError(key, option, f"one of {', '.join(_options(group))} (files in warmup_lab/conf/{key}/)")


def check_multirun_out(argv: Sequence[str]) -> None:
    """Raise ConfigError for `-m`/`--multirun` together with a non-null `out=`."""
    if not {"-m", "--multirun"} & set(argv):
        return
    for arg in argv:
        if arg.lstrip("+").startswith("out=") and arg.split("=", 1)[1] not in ("", "null"):
            raise ConfigError("out", arg.split("=", 1)[1],
                              "a multirun gives each job its own directory under runs_root: drop out= (set runs_root=)")


@exit_on_user_error
def check_argv() -> None:
    check_group_choices(sys.argv[1:])
    check_multirun_out(sys.argv[1:])
