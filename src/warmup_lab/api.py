"""The Python API for notebooks and scripts: the same runs, searches, tables and schedules as the CLI.

    import warmup_lab as wl
    summary = wl.run(["task=digits", "optimizer.lr=0.1", "train.steps=100"])
    found = wl.search(["task=digits", "optimizer=sgd"], out_dir="results/my_search", seeds=[0, 1, 2])
    runs = wl.load_runs(["runs"]); curves = wl.load_curves(["runs"])
    lr = wl.schedule("wsd", total_steps=1000, peak_lr=3e-4, warmup_steps=100); lr(0), lr(500)
    scheduler = wl.get_scheduler("cosine", optimizer, num_warmup_steps=100, num_training_steps=1000)

Reference with runnable examples: docs/api.md. Each function composes the packaged configs exactly as
`warmup-lab train` does, so a run made here and one made on the command line share their directory.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from warmup_lab.errors import ConfigError, require
from warmup_lab.paths import CONF_DIR

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from warmup_lab.schedules import Schedule

Overrides = Sequence[str] | Mapping[str, Any]


def _override_list(overrides: Overrides) -> list[str]:
    """Hydra override strings from a list of them or a {key: value} mapping."""
    if isinstance(overrides, str):
        raise ConfigError("overrides", overrides, "a list of 'key=value' strings, or a {key: value} dict")
    if isinstance(overrides, Mapping):
        def value(v: Any) -> str:
            if isinstance(v, (list, tuple)):
                return "[" + ",".join(map(value, v)) + "]"
            return "null" if v is None else str(v).lower() if isinstance(v, bool) else str(v)

        return [f"{k}={value(v)}" for k, v in overrides.items()]
    return [str(o) for o in overrides]


def compose(overrides: Overrides = (), config_name: str = "train") -> DictConfig:
    """The config `warmup-lab train <overrides>` would run (one line for a bad override, as the CLI)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from warmup_lab.cli import check_group_choices

    args = _override_list(overrides)
    check_group_choices(args)
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name, overrides=args)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError("overrides", args, str(err).strip().splitlines()[0]) from None


def run(overrides: Overrides = (), out: str | Path | None = None) -> dict[str, Any]:
    """Train (or resume, or skip if finished) one run; returns its summary (the dict in summary.json).

    Without `out` the run lives in runs/<name>-<config hash> under the current directory, like the CLI's."""
    from warmup_lab.job import train

    return train(compose(overrides), Path(out) if out is not None else None)


@dataclass
class SearchResult:
    """The tables a max-stable-LR search wrote into `out_dir` (warmup_lab.stability's files)."""

    out_dir: Path
    eta_max: pd.DataFrame  # per setting, criterion and seed
    summary: pd.DataFrame  # median over seeds with its interval, censored seeds counted
    p_stable: pd.DataFrame  # P(stable | LR) from every probe
    compare: pd.DataFrame  # each warmup setting against no warmup


def search(overrides: Overrides = (), *, out_dir: str | Path, seeds: Sequence[int] = (0, 1, 2),
           **sweeper: Any) -> SearchResult:
    """`warmup-lab search <overrides>` in a child process (progress printed here); returns its tables.

    `sweeper` sets `hydra.sweeper.<key>` (criterion, resolution, start_lr, max_rounds, ...: docs/search.md).
    Probes are normal runs: a second call with the same arguments finds them and trains nothing."""
    from warmup_lab import stability

    out = Path(out_dir)
    args = [*_override_list(overrides), f"hydra.sweeper.seeds=[{','.join(str(int(s)) for s in seeds)}]",
            f"hydra.sweeper.out_dir={out}", *_override_list({f"hydra.sweeper.{k}": v for k, v in sweeper.items()})]
    proc = subprocess.Popen([sys.executable, "-m", "warmup_lab", "search", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    last = ""
    assert proc.stdout is not None
    for line in proc.stdout:  # through this process's stdout, so a notebook cell shows the progress
        print(line, end="", flush=True)
        last = line.strip() or last
    if proc.wait() != 0:
        raise RuntimeError(f"warmup-lab search exited with {proc.returncode}: {last}")
    tables = [stability.read_table(out / name) for name in
              (stability.ETA_FILE, stability.SUMMARY_FILE, stability.P_STABLE_FILE, stability.COMPARE_FILE)]
    return SearchResult(out, *tables)


def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run found under `paths` (the report's reader: typed columns, duplicates kept once);
    where no run directory is left, the runs.parquet (else runs.csv) of committed results folders."""
    from warmup_lab import archive, report

    table = report.load_runs([Path(p) for p in paths])
    return table if not table.empty else archive.read_runs(paths)


def load_curves(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per step of every run under `paths` (step, loss, lr, grad_norm, spike), with each run's
    config_hash, run_path and the setting it belongs to (task, model, optimizer, warmup, target_lr, seed, ...).
    Typed columns (step int64, spike bool, the rest float64); every metrics.csv is parsed in one pass.
    A results folder without run directories gives its curves.parquet (step, loss, lr, spike)."""
    import numpy as np
    import pandas as pd

    from warmup_lab import archive
    from warmup_lab.summary import KEY_VALUES

    table = load_runs(paths)
    keys = [k for k in ("config_hash", "run_path", "status", *KEY_VALUES) if k in table]
    steps, spans = archive.read_metrics(list(table["run_path"])) if "run_path" in table else (pd.DataFrame(), {})
    if not spans:  # committed results: the archive, joined to its runs on config_hash
        saved = [archive.Curves.read(p).archive for p in paths]
        saved = pd.concat(saved, ignore_index=True) if saved else pd.DataFrame()
        if saved.empty or archive.RUN_KEY not in table:
            return pd.DataFrame(columns=[*keys, "step", "loss", "lr"])
        runs_part = table[keys].assign(**{archive.RUN_KEY: table[archive.RUN_KEY].astype(str)})
        return runs_part.merge(saved, on=archive.RUN_KEY, how="inner")
    have = [(i, spans[p]) for i, p in enumerate(table["run_path"]) if p in spans]
    idx = np.concatenate([np.arange(a, b) for _, (a, b) in have])
    owner = np.repeat([i for i, _ in have], [b - a for _, (a, b) in have])
    curves = steps.iloc[idx].reset_index(drop=True)
    labels = table[keys].iloc[owner].reset_index(drop=True)
    return pd.concat([labels, curves], axis=1)


def preset_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "schedule").glob("*.yaml") if not p.stem.startswith("_"))


def schedule(name: str, *, total_steps: int, peak_lr: float, warmup_steps: int | None = None,
             betas: tuple[float, float] | None = None, **overrides: Any) -> Schedule:
    """The schedule preset `name` (warmup_lab/conf/schedule/<name>.yaml) as a pure step -> LR function.

    `overrides` are keys of the schedule group (min_lr_ratio=0.1, step0="shifted", decay_ratio=0.2, ...);
    `betas` is needed only by the untuned/radam warmups, whose length comes from Adam's beta2."""
    from warmup_lab.schedules import build_schedule

    require(name in preset_names(), "name", name, f"one of {', '.join(preset_names())}")
    preset = OmegaConf.load(CONF_DIR / "schedule" / f"{name}.yaml")
    preset.pop("defaults", None)
    given = {**OmegaConf.to_container(preset), **({"warmup_steps": warmup_steps} if warmup_steps is not None else {}),
             **overrides}
    return build_schedule(given, total_steps=total_steps, target_lr=peak_lr, betas=betas,
                          names=("total_steps", "peak_lr"))


# Hugging Face get_scheduler names -> the same schedule here (tests/test_api.py checks every step against HF),
# and the names of HF's scheduler_specific_kwargs in our schedule group.
HF_SCHEDULES = {
    "linear": {"warmup": "linear", "decay": "linear"},
    "cosine": {"warmup": "linear", "decay": "cosine"},
    "cosine_with_restarts": {"warmup": "linear", "decay": "cosine_restarts"},
    "polynomial": {"warmup": "linear", "decay": "polynomial", "end_lr": 1e-7},
    "constant": {"warmup": "none", "decay": "constant"},
    "constant_with_warmup": {"warmup": "linear", "decay": "constant"},
    "inverse_sqrt": {"warmup": "linear", "decay": "inverse_sqrt"},
    "cosine_with_min_lr": {"warmup": "linear", "decay": "cosine"},
}
HF_KWARGS = {"num_cycles": "cycles", "lr_end": "end_lr", "power": "power", "timescale": "timescale",
             "min_lr": "min_lr", "min_lr_rate": "min_lr_ratio"}


def get_scheduler(name: str, optimizer: torch.optim.Optimizer, num_warmup_steps: int | None = None,
                  num_training_steps: int | None = None, scheduler_specific_kwargs: dict | None = None
                  ) -> torch.optim.lr_scheduler.LambdaLR:
    """A drop-in for transformers.get_scheduler: the same signature, names and values (a LambdaLR on
    `optimizer`, each group scaled from its own LR). Any preset name of ours works too (`wsd`, ...)."""
    from warmup_lab.schedules import as_torch_scheduler, build_schedule
    from warmup_lab.schedules.build import check_lr

    require(num_training_steps is not None, "num_training_steps", num_training_steps, "the total number of updates")
    peak = check_lr(float(optimizer.defaults["lr"]), "optimizer.lr")  # the optimizer's, not an argument here
    extra = dict(scheduler_specific_kwargs or {})
    if name in HF_SCHEDULES:
        unknown = sorted(set(extra) - set(HF_KWARGS))
        require(not unknown, "scheduler_specific_kwargs", unknown, f"keys among {', '.join(HF_KWARGS)}")
        warmup = {} if name == "constant" else {"warmup_steps": int(num_warmup_steps or 0)}  # HF ignores it there
        cfg = {**HF_SCHEDULES[name], **warmup, **{HF_KWARGS[k]: v for k, v in extra.items()}}
        sched = build_schedule(cfg, total_steps=int(num_training_steps), target_lr=peak)
    elif name in preset_names():
        betas = optimizer.defaults.get("betas")  # the untuned warmups' length comes from Adam's beta2
        sched = schedule(name, total_steps=int(num_training_steps), peak_lr=peak, warmup_steps=num_warmup_steps,
                         betas=tuple(betas) if betas is not None else None, **extra)
    else:
        raise ConfigError("name", name, f"a Hugging Face name ({', '.join(HF_SCHEDULES)}) or a preset "
                          f"({', '.join(preset_names())})")
    return as_torch_scheduler(optimizer, sched)


__all__ = ["run", "search", "SearchResult", "load_runs", "load_curves", "schedule", "get_scheduler", "compose",
           "preset_names", "HF_SCHEDULES"]
