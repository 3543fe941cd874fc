"""Where a run lives and what it leaves behind.

A run is keyed by a hash of its resolved config (seed included; keys that cannot change the result
excluded), and its directory carries that hash: two jobs never collide, and a re-run of a sweep finds
what is already done (DESIGN.md section 7, pitfalls 1-2). Files are written atomically, so a run
killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.csv"
EVAL_FILE = "eval.csv"
CHECKPOINT_FILE = "checkpoint.pt"

# Statuses (DESIGN.md section 2). A finished run is never redone; an `error` run is.
COMPLETED, DIVERGED, FAILED, ERROR = "completed", "diverged", "failed_to_train", "error"
FINISHED_STATUSES = (COMPLETED, DIVERGED, FAILED)
STABLE_STATUSES = (COMPLETED,)  # what "trains stably" means for the max-stable-LR search

# The summary fields that identify a setting (trainer.key_values minus target LR and seed): reports pivot
# on them and the max-stable-LR search labels its rows with them.
SETTING_KEYS = ("task", "model", "norm", "optimizer", "warmup", "decay", "warmup_steps", "train_steps", "batch_size")

# Keys that name, place or display a run but cannot change its result.
HASH_EXCLUDED = ("hydra", "out", "runs_root", "name", "logger", "experiment_name", "threads")
HASH_EXCLUDED_NESTED = (("train", "progress"),)


def result_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config minus the keys that cannot change the result."""
    keys = [k for k in cfg.keys() if k not in HASH_EXCLUDED]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    for outer, inner in HASH_EXCLUDED_NESTED:
        if isinstance(data.get(outer), dict):
            data[outer].pop(inner, None)
    return data  # type: ignore[return-value]


def config_hash(cfg: DictConfig, length: int = 10) -> str:
    blob = json.dumps(result_config(cfg), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _hash_resolver(*, _root_: DictConfig) -> str:
    return config_hash(_root_)


_NO_DEFAULT = object()


def _pick(setting: str, index: int, default: Any = _NO_DEFAULT) -> Any:
    """`${pick:linear@64,1}` -> 64: one sweep value that sets several keys together.

    Sweeps vary (warmup shape, warmup length[, initial-LR ratio]) as one value such as `none@0`,
    `linear@64` or `constant@64@0.1`, so that shapes without a length are not re-run at every length
    of a grid. A missing field takes `default` when one is given.
    """
    import yaml

    parts = str(setting).split("@")
    if 0 <= int(index) < len(parts):
        return yaml.safe_load(parts[int(index)])
    if default is not _NO_DEFAULT:
        return default
    from warmup_lab.errors import ConfigError

    raise ConfigError("warmup_setting", setting, f"needs at least {int(index) + 1} '@'-separated fields")


if not OmegaConf.has_resolver("hash"):
    # `${hash:}` in conf/train.yaml names each run's directory after its config.
    OmegaConf.register_new_resolver("hash", _hash_resolver, use_cache=False)
if not OmegaConf.has_resolver("pick"):
    OmegaConf.register_new_resolver("pick", _pick)


def run_dir_for(cfg: DictConfig) -> Path:
    """`out` if given, else <runs_root>/<name>-<hash> (the same path Hydra's run/sweep dir uses)."""
    if cfg.get("out"):
        return Path(str(cfg.out))
    return Path(str(cfg.runs_root)) / f"{cfg.name}-{config_hash(cfg)}"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; store them as strings pandas reads back as floats."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(_json_safe(summary), indent=2, sort_keys=True) + "\n")


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary, or None when it is missing or unreadable (a corrupt file is not a result)."""
    try:
        data = json.loads((Path(run_dir) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(run_dir: Path) -> bool:
    summary = read_summary(run_dir)
    return summary is not None and summary.get("status") in FINISHED_STATUSES


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))


def find_run_dirs(roots: Iterable[Path]) -> list[Path]:
    """Every directory under `roots` that holds a summary file (or is a run dir with a config)."""
    found: set[Path] = set()
    for root in roots:
        root = Path(root)
        for marker in (SUMMARY_FILE, CONFIG_FILE):
            for p in root.rglob(marker):
                if p.parent.name != ".hydra":
                    found.add(p.parent)
    return sorted(found)
