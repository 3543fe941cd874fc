"""The OmegaConf resolvers the configs use, registered once when the package is imported.

- `${hash:}` (conf/train.yaml): a run's directory is named after the hash of its resolved config;
- `${pick:linear@64,1}` -> 64 (conf/experiment/*): one sweep value that sets several keys together;
- `${first:${out},<default>}` (conf/lr_curve.yaml): Hydra's run dir is `out` when given, so Hydra
  creates nothing elsewhere.
"""

from __future__ import annotations

from typing import Any, Callable

import yaml
from omegaconf import DictConfig, OmegaConf

from warmup_lab.errors import ConfigError
from warmup_lab.runs import config_hash

_NO_DEFAULT = object()


def _hash(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


def pick(setting: str, index: int, default: Any = _NO_DEFAULT) -> Any:
    """Field `index` of an '@'-separated sweep value such as `none@0`, `linear@64` or `constant@64@0.1`.

    Sweeps vary (warmup shape, warmup length[, initial-LR ratio]) as one value, so that shapes without a
    length are not re-run at every length of a grid. A missing field takes `default` when one is given.
    """
    parts = str(setting).split("@")
    if 0 <= int(index) < len(parts):
        return yaml.safe_load(parts[int(index)])
    if default is not _NO_DEFAULT:
        return default
    raise ConfigError("warmup_setting", setting, f"needs at least {int(index) + 1} '@'-separated fields")


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


# Uncached: a cached value would outlive a change of what it was computed from (a config edited in place).
RESOLVERS: dict[str, Callable[..., Any]] = {"hash": _hash, "pick": pick, "first": _first}


def register() -> None:
    """Register every resolver above (idempotent)."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn, use_cache=False)
