"""A run's summary.json, declared once: the record the trainer writes and every reader gets back.

`RunSummary` names every field and its type; `write_summary` refuses a field it does not declare and
stamps the schema version; `read_summary` is the one reader (the report, stability via the report's
frame, the mechanisms tables, the max-stable-LR sweeper, the sweep driver and the trainer's own skip):
it decodes the non-finite values JSON cannot hold ("nan"/"inf" strings, and null where a float is
declared) back to floats, and turns an old, foreign or corrupt file into None with one line saying why.

`KEY_VALUES` (the config values a report pivots on) and `SETTING_KEYS` (those that identify a setting)
come from the one table `_KEY_SOURCES`, which is also what the trainer records them with.
"""

from __future__ import annotations

import json
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, TypedDict, Union

from omegaconf import DictConfig

from warmup_lab import runs

SCHEMA_VERSION = 1  # bump when a field changes meaning; read_summary refuses every other version


class RunSummary(TypedDict, total=False):
    """summary.json. A finished run has all of it; a stopped one (error, preempted, interrupted) has the
    `schema`, `status`, `steps_run` and `config_hash` block and why it stopped."""

    schema: int
    status: str                         # runs.FINISHED_STATUSES or runs.UNFINISHED_STATUSES
    steps_run: int
    config_hash: str
    # why a run stopped early
    checkpoint_step: int
    signal: str
    error: str
    # key values (KEY_VALUES): the setting, its target LR and seed
    task: str
    model: str
    norm: str | None
    optimizer: str
    warmup: str
    decay: str
    warmup_steps: int
    target_lr: float
    seed: int
    train_steps: int
    batch_size: int
    # losses and held-out metrics (docs/definitions.md)
    init_loss: float
    final_train_loss: float
    final_eval_loss: float
    final_eval_acc: float
    final_eval_ppl: float
    final_eval_exact_match: float
    best_eval_loss: float | None       # None: no finite evaluation
    best_eval_acc: float | None
    chance_acc: float | None
    # live detectors (detectors.Monitor.stats)
    diverged_step: int | None
    spike_events: int
    spike_steps: int
    max_spike_ratio: float
    first_spike_step: int | None
    catapult_count: int
    max_catapult_ratio: float
    spikes: list[dict[str, Any]]
    catapults: list[dict[str, Any]]
    sharpness: list[dict[str, Any]]
    # the schedule as run
    peak_lr: float                      # the largest LR applied
    nominal_peak_lr: float
    schedule: dict[str, Any]
    lr_groups: dict[str, Any]
    # what ran, where, how fast
    task_info: dict[str, Any]
    optimizer_info: dict[str, Any]
    detect: dict[str, Any]
    experiment: str | None
    sweep_group: str | None
    run_dir: str
    device: str
    torch: str
    wall_s: float
    samples_per_s: float
    resumed_from: int | None
    wandb_mode: str


FIELDS: dict[str, Any] = typing.get_type_hints(RunSummary)


# -- key values ----------------------------------------------------------------------------------
def _norm(cfg: DictConfig, schedule: dict[str, Any]) -> str | None:
    model = cfg.model
    return model.get("norm_position") if model.get("family") == "transformer" else model.get("norm")


# summary field -> its value from (resolved config, Schedule.describe()). A setting is all but LR and seed.
_KEY_SOURCES: dict[str, Callable[[DictConfig, dict[str, Any]], Any]] = {
    "task": lambda cfg, s: cfg.task.name,
    "model": lambda cfg, s: cfg.model.name,
    "norm": _norm,
    "optimizer": lambda cfg, s: cfg.optimizer.name,
    "warmup": lambda cfg, s: s.get("warmup"),
    "decay": lambda cfg, s: s.get("decay"),
    "warmup_steps": lambda cfg, s: s.get("warmup_steps"),
    "target_lr": lambda cfg, s: float(cfg.optimizer.lr),
    "seed": lambda cfg, s: int(cfg.seed),
    "train_steps": lambda cfg, s: int(cfg.train.steps),
    "batch_size": lambda cfg, s: int(cfg.train.batch_size),
}
KEY_VALUES = tuple(_KEY_SOURCES)
SETTING_KEYS = tuple(k for k in KEY_VALUES if k not in ("target_lr", "seed"))


def key_values(cfg: DictConfig, schedule_info: dict[str, Any]) -> dict[str, Any]:
    """The config values a report pivots on, flat, next to the full config."""
    return {key: source(cfg, schedule_info) for key, source in _KEY_SOURCES.items()}


# -- encoding ------------------------------------------------------------------------------------
_NONFINITE = {"nan": math.nan, "NaN": math.nan, "inf": math.inf, "Infinity": math.inf,
              "-inf": -math.inf, "-Infinity": -math.inf}


def json_safe(value: Any) -> Any:
    """NaN/inf are not JSON; store them as the strings read_summary decodes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _decode_nested(value: Any) -> Any:
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _decode_nested(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_nested(v) for v in value]
    return value


def _kinds(declared: Any) -> tuple[set[type], bool]:
    """The plain types a declared field allows, and whether it allows None."""
    if typing.get_origin(declared) in (Union, types.UnionType):
        args = typing.get_args(declared)
        return {typing.get_origin(a) or a for a in args if a is not type(None)}, type(None) in args
    return {typing.get_origin(declared) or declared}, False


def _decode(key: str, value: Any) -> Any:
    """`value` as field `key` declares it; ValueError naming the field when it cannot be."""
    declared = FIELDS.get(key)
    if declared is None:  # not ours to judge (kept as read)
        return value
    kinds, nullable = _kinds(declared)
    if float in kinds:
        if value is None and not nullable:
            return math.nan  # a float the writer could not compute
        if isinstance(value, str) and value in _NONFINITE:
            return _NONFINITE[value]
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    if value is None and nullable:
        return None
    if kinds & {dict, list}:
        value = _decode_nested(value)
    if not isinstance(value, tuple(kinds)) or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"field {key!r} is {value!r}, not {' or '.join(sorted(k.__name__ for k in kinds))}")
    return value


# -- the file ------------------------------------------------------------------------------------
def write_summary(run_dir: Path, summary: RunSummary) -> None:
    """summary.json, atomically, with the schema version; an undeclared field is a programming error."""
    undeclared = sorted(set(summary) - set(FIELDS))
    if undeclared:
        raise TypeError(f"run summary fields not declared in warmup_lab.summary.RunSummary: {', '.join(undeclared)}")
    record = {**summary, "schema": SCHEMA_VERSION}
    runs.atomic_write_text(Path(run_dir) / runs.SUMMARY_FILE,
                           json.dumps(json_safe(record), indent=2, sort_keys=True) + "\n")


def parse_summary(data: Any) -> RunSummary:
    """A decoded RunSummary from parsed JSON; ValueError with one clause saying why it is not one."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if "status" not in data:
        raise ValueError("no 'status' field: not a warmup-lab run summary")
    version = data.get("schema")
    if version != SCHEMA_VERSION:
        written = "no schema version (written by warmup-lab before 0.1's record)" if version is None else \
            f"schema {version!r}"
        raise ValueError(f"{written}; this warmup-lab reads schema {SCHEMA_VERSION}: re-run that run or sweep "
                         "(the same command) to rewrite it")
    record = {key: _decode(key, value) for key, value in data.items()}
    if record["status"] not in runs.STATUSES:
        raise ValueError(f"status {record['status']!r} is not one of {', '.join(runs.STATUSES)}")
    return record  # type: ignore[return-value]


def read_summary(run_dir: Path, warn: Callable[[str], None] | None = None) -> RunSummary | None:
    """The run's decoded summary; None when it is missing, unreadable, old or foreign (a result nobody
    can vouch for is not one), after telling `warn` which file and why."""
    path = Path(run_dir) / runs.SUMMARY_FILE
    try:
        return parse_summary(json.loads(path.read_bytes()))
    except FileNotFoundError:
        why = "missing (run not finished?)"
    except OSError as err:
        why = f"unreadable ({err.strerror or type(err).__name__})"
    except UnicodeDecodeError:
        why = "unreadable JSON (not UTF-8)"
    except json.JSONDecodeError as err:
        why = f"unreadable JSON ({type(err).__name__})"
    except ValueError as err:
        why = str(err)
    if warn is not None:
        warn(f"skipping {path}: {why}")
    return None


def is_finished(summary: RunSummary | None) -> bool:
    """A summary of a run that finished (completed, diverged or failed_to_train): a result."""
    return summary is not None and summary["status"] in runs.FINISHED_STATUSES
