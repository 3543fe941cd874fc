"""`MaxStableLRSweeper`: one maximum-stable-LR search per (setting, seed), run in lock-step rounds.

Each round gathers the next probe of every unfinished search and hands them to the launcher as one
batch, so probes run in parallel under any launcher (basic, joblib, submitit local/SLURM). Every
probe is an ordinary job with its own run dir and summary; a re-run asks for the same LRs (the
search's log-grid), the jobs find their finished runs, and the search replays without training.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner executes this module before it is
# in sys.modules, and dataclasses then cannot resolve string annotations.
import csv
import io
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from warmup_lab import runs, search
from warmup_lab.errors import EXIT_CONFIG, ConfigError

log = logging.getLogger(__name__)

SEARCH_FILE, CSV_FILE, SUMMARY_CSV_FILE = "search.json", "eta_max.csv", "eta_max_summary.csv"
RESULT_COLUMNS = ["eta_max", "lo", "hi", "n_probes", "n_errors", "non_monotone", "below_min", "above_max", "done"]
AGGREGATE_COLUMNS = ["n_seeds", "n_values", "median", "geomean", "min", "max", "spread_res", "non_monotone",
                     "n_below_min", "n_above_max", "n_errors", "all_done"]


@dataclass
class MaxStableLRSweeperConf:
    _target_: str = "hydra_plugins.warmup_lab_search.sweeper.MaxStableLRSweeper"
    params: Dict[str, Any] = field(default_factory=dict)  # settings grid, BasicSweeper syntax: {key: "a,b,c"}
    seeds: List[Any] = field(default_factory=lambda: [0, 1])
    lr_key: str = "optimizer.lr"  # config key each probe overrides with its LR
    seed_key: str = "seed"
    start_lr: float = 1e-3
    bracket_factor: float = search.BRACKET_FACTOR
    resolution: float = search.RESOLUTION
    min_lr: float = search.MIN_LR
    max_lr: float = search.MAX_LR
    check_above: int = search.CHECK_ABOVE
    error_retries: int = search.ERROR_RETRIES
    max_rounds: int = 50
    stable_statuses: Optional[List[str]] = None  # null = warmup_lab.runs.STABLE_STATUSES
    out_dir: Optional[str] = None  # where search.json/eta_max*.csv go; null = hydra.sweep.dir


ConfigStore.instance().store(group="hydra/sweeper", name="max_stable_lr", node=MaxStableLRSweeperConf,
                             provider="warmup_lab")


def _flatten(d: Any, prefix: str = "") -> Dict[str, str]:
    """{"schedule": {"warmup_steps": "0,16"}} -> {"schedule.warmup_steps": "0,16"} (CLI dotted keys nest)."""
    out: Dict[str, str] = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = str(v)
    return out


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


class MaxStableLRSweeper(Sweeper):
    def __init__(self, params: Optional[Dict[str, Any]] = None, seeds: Sequence[Any] = (0, 1),
                 lr_key: str = "optimizer.lr", seed_key: str = "seed", start_lr: float = 1e-3,
                 bracket_factor: float = search.BRACKET_FACTOR, resolution: float = search.RESOLUTION,
                 min_lr: float = search.MIN_LR, max_lr: float = search.MAX_LR, check_above: int = search.CHECK_ABOVE,
                 error_retries: int = search.ERROR_RETRIES, max_rounds: int = 50,
                 stable_statuses: Optional[Sequence[str]] = None, out_dir: Optional[str] = None) -> None:
        super().__init__()
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)  # type: ignore[assignment]
        self.params = _flatten(params)
        self.seeds = list(seeds)
        self.lr_key, self.seed_key = lr_key, seed_key
        self.search_kw = dict(start_lr=start_lr, bracket_factor=bracket_factor, resolution=resolution,
                              min_lr=min_lr, max_lr=max_lr, check_above=check_above, error_retries=error_retries)
        self.max_rounds = int(max_rounds)
        self.stable = tuple(stable_statuses) if stable_statuses is not None else runs.STABLE_STATUSES
        self.out_dir = out_dir
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher: Optional[Launcher] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    # -- settings and probes -----------------------------------------------------------------
    def _settings(self, arguments: List[str]) -> List[List[str]]:
        """The grid: BasicSweeper's cartesian product of `params` and the command-line overrides."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        settings = BasicSweeper.split_arguments(overrides, None)[0]
        for ov in settings[0] if settings else []:
            if _key(ov) in (_key(self.lr_key), _key(self.seed_key)):
                raise ConfigError(_key(ov), ov.split("=", 1)[1],
                                  f"the search sets it; drop it and use hydra.sweeper.{'seeds' if _key(ov) == _key(self.seed_key) else 'start_lr/min_lr/max_lr'}")
        return settings

    def _outcome(self, ret: JobReturn) -> tuple[Optional[bool], Dict[str, Any]]:
        """Stable/unstable from the job's summary.json; None (an error probe) when it has no result."""
        run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
        summary = runs.read_summary(Path(run_dir)) if run_dir else None
        status = summary.get("status") if summary else None
        info: Dict[str, Any] = {"status": status if status is not None else "no_summary", "run_dir": run_dir}
        if ret.status == JobStatus.FAILED:
            try:
                ret.return_value
            except Exception as err:  # noqa: BLE001 - the job's own exception, kept as text
                info["job_error"] = f"{type(err).__name__}: {err}"
        if status in self.stable:
            return True, info
        if status in runs.FINISHED_STATUSES:
            return False, info
        return None, info

    # -- the sweep ---------------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> Any:
        """Bad settings end in one line on stderr and exit 2 (warmup_lab.errors), before any job runs."""
        try:
            search.LRSearch(**self.search_kw)
            settings = self._settings(arguments)
        except ValueError as err:  # ConfigError is one
            print(f"error: hydra.sweeper: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG)
        return self._sweep(settings)

    def _sweep(self, settings: List[List[str]]) -> Any:
        assert self.config is not None and self.launcher is not None
        out_dir = Path(self.out_dir or str(self.config.hydra.sweep.dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, out_dir / "multirun.yaml")
        searches = {(i, seed): search.LRSearch(**self.search_kw) for i in range(len(settings)) for seed in self.seeds}
        print(f"[max_stable_lr] {len(settings)} settings x {len(self.seeds)} seeds = {len(searches)} searches; "
              f"stable = status in {list(self.stable)}; out: {out_dir}", flush=True)
        returns: List[Sequence[JobReturn]] = []
        job_idx, rounds = 0, 0
        while rounds < self.max_rounds:
            pending = [(key, s.next_lr()) for key, s in searches.items() if not s.done]
            if not pending:
                break
            rounds += 1
            batch = [settings[i] + [f"{self.seed_key}={seed}", f"{self.lr_key}={lr!r}"] for (i, seed), lr in pending]
            if rounds == 1:
                self.validate_batch_is_legal(batch)  # composition errors surface before any job runs
            try:
                results = self.launcher.launch(batch, initial_job_idx=job_idx)
            except BaseException:
                self._write(out_dir, settings, searches, rounds - 1)  # keep what earlier rounds found
                raise
            job_idx += len(batch)
            returns.append(results)
            for ((i, seed), lr), ret in zip(pending, results):
                stable, info = self._outcome(ret)
                searches[(i, seed)].record(lr, stable, round=rounds, **info)
            n_done = sum(s.done for s in searches.values())
            print(f"[max_stable_lr] round {rounds}: {len(batch)} probes "
                  f"({_count(searches, rounds)}) | "
                  f"searches done {n_done}/{len(searches)}, remaining {len(searches) - n_done}", flush=True)
            self._write(out_dir, settings, searches, rounds)
        unfinished = sum(not s.done for s in searches.values())
        if unfinished:
            log.warning(f"max_rounds={self.max_rounds} reached with {unfinished} searches unfinished (done=False)")
        self._write(out_dir, settings, searches, rounds)
        print(self._table(settings, searches), flush=True)
        return returns

    # -- outputs -----------------------------------------------------------------------------
    def _report(self, settings: List[List[str]], searches: Dict[Any, search.LRSearch], rounds: int) -> Dict[str, Any]:
        out = []
        for i, setting in enumerate(settings):
            results = {seed: searches[(i, seed)].result() for seed in self.seeds}
            out.append({"setting": i, "overrides": dict(ov.split("=", 1) for ov in setting),
                        "seeds": [{"seed": seed, **r} for seed, r in results.items()],
                        "aggregate": search.aggregate(results)})
        return {"criterion": {"stable_statuses": list(self.stable),
                              "unstable_statuses": [s for s in runs.FINISHED_STATUSES if s not in self.stable],
                              "error": f"no finished summary: retried {self.search_kw['error_retries']}x, then unstable"},
                "search": {**self.search_kw, "lr_key": self.lr_key, "seed_key": self.seed_key, "seeds": self.seeds,
                           "max_rounds": self.max_rounds},
                "rounds": rounds, "settings": out}

    def _write(self, out_dir: Path, settings: List[List[str]], searches: Dict[Any, search.LRSearch], rounds: int) -> None:
        report = self._report(settings, searches, rounds)
        runs.atomic_write_text(out_dir / SEARCH_FILE, json.dumps(runs._json_safe(report), indent=2, default=str) + "\n")
        keys = list(dict.fromkeys(_key(k) for s in report["settings"] for k in s["overrides"]))
        resolved = [_setting_values(s) for s in report["settings"]]
        keys += [k for k in runs.SETTING_KEYS if k not in keys and any(k in r for r in resolved)]
        rows, agg_rows = [], []
        for s, values in zip(report["settings"], resolved):
            cols = {"setting": s["setting"], **values, **{_key(k): v for k, v in s["overrides"].items()}}
            rows += [{**cols, "seed": r["seed"], **{c: r[c] for c in RESULT_COLUMNS}} for r in s["seeds"]]
            agg_rows.append({**cols, **{c: s["aggregate"][c] for c in AGGREGATE_COLUMNS}})
        for name, header, data in ((CSV_FILE, ["setting", *keys, "seed", *RESULT_COLUMNS], rows),
                                   (SUMMARY_CSV_FILE, ["setting", *keys, *AGGREGATE_COLUMNS], agg_rows)):
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
            writer.writeheader()
            writer.writerows(data)
            runs.atomic_write_text(out_dir / name, buf.getvalue())

    def _table(self, settings: List[List[str]], searches: Dict[Any, search.LRSearch]) -> str:
        fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
        lines = [f"criterion: stable = status in {list(self.stable)}; probes on a x{self.search_kw['resolution']:.4g} grid",
                 f"{'set':>3} {'seed':>5} {'eta_max':>9} {'hi':>9} {'probes':>6}  flags / overrides that vary"]
        varying = {ov for setting in settings for ov in setting if any(ov not in other for other in settings)}
        for i, setting in enumerate(settings):
            for seed in self.seeds:
                r = searches[(i, seed)].result()
                flags = [f for f in ("non_monotone", "below_min", "above_max") if r[f]]
                flags += ["errors"] * bool(r["n_errors"]) + ["unfinished"] * (not r["done"])
                lines.append(f"{i:>3} {seed!s:>5} {fmt(r['eta_max']):>9} {fmt(r['hi']):>9} {r['n_probes']:>6}  "
                             f"{','.join(flags) or 'ok'} {' '.join(ov for ov in setting if ov in varying)}")
            a = search.aggregate({seed: searches[(i, seed)].result() for seed in self.seeds})
            lines.append(f"{i:>3} {'all':>5} {fmt(a['median']):>9} {'':>9} {'':>6}  median; geomean {fmt(a['geomean'])}, "
                         f"spread {a['spread_res']} x resolution")
        return "\n".join(lines)


def _setting_values(setting: Dict[str, Any]) -> Dict[str, Any]:
    """The resolved setting (task, model, warmup shape and length, ...) read from one of its probes' summaries,
    so that rows of different arms or presets stay distinguishable in a report."""
    for seed in setting["seeds"]:
        for probe in seed.get("probes", []):
            summary = runs.read_summary(Path(probe["run_dir"])) if probe.get("run_dir") else None
            if summary and "task" in summary:
                return {k: summary.get(k) for k in runs.SETTING_KEYS}
    return {}


def _count(searches: Dict[Any, search.LRSearch], rounds: int) -> str:
    """Stable/unstable/error counts among the probes of round `rounds`."""
    probes = [p for s in searches.values() for p in s.probes if p.get("round") == rounds]
    n_stable = sum(p["stable"] is True for p in probes)
    n_err = sum(p["stable"] is None for p in probes)
    return f"{n_stable} stable, {len(probes) - n_stable - n_err} unstable, {n_err} errors"
