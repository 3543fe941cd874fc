"""`MaxStableLRSweeper`: one maximum-stable-LR search per (setting, seed), run in lock-step rounds.

Each round gathers the next probe of every unfinished search and hands them to the launcher as one
batch, so probes run in parallel under any launcher (basic, joblib, submitit local/SLURM). Every
probe is an ordinary job with its own run dir and summary; a re-run asks for the same LRs (the
search's log-grid), the jobs find their finished runs, and the search replays without training.

When every seed of a setting is done and the seeds disagree on the edge, each seed is also probed at
the median seed's lo/hi (`cross_seed`, lr_search.disagreement_lrs). The tables (eta_max per seed, the
median over seeds with its exact order-statistic interval, P(stable | LR), ratios to no warmup) come from
warmup_lab.stability over every probe, under each of `criteria`; `criterion` steers the search.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner executes this module before it is
# in sys.modules, and dataclasses then cannot resolve string annotations.
import json
import logging
import sys
import time
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

import pandas as pd

from warmup_lab import lr_search, runs, stability
from warmup_lab.errors import EXIT_CONFIG, ConfigError
from warmup_lab.summary import SETTING_KEYS, json_safe, read_summary

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
# Result fields copied from a probe's summary into search.json and the probe table.
PROBE_FIELDS = ("init_loss", "final_train_loss", "final_eval_loss")
JUDGED_FIELDS = (*PROBE_FIELDS, "baseline_loss")  # what stability.judge reads of a probe


@dataclass
class MaxStableLRSweeperConf:
    _target_: str = "hydra_plugins.warmup_lab_search.sweeper.MaxStableLRSweeper"
    params: Dict[str, Any] = field(default_factory=dict)  # settings grid, BasicSweeper syntax: {key: "a,b,c"}
    seeds: List[Any] = field(default_factory=lambda: [0, 1])
    lr_key: str = "optimizer.lr"  # config key each probe overrides with its LR
    seed_key: str = "seed"
    start_lr: float = lr_search.START_LR
    bracket_factor: float = lr_search.BRACKET_FACTOR
    resolution: float = lr_search.RESOLUTION
    min_lr: float = lr_search.MIN_LR
    max_lr: float = lr_search.MAX_LR
    check_above: int = lr_search.CHECK_ABOVE
    error_retries: int = lr_search.ERROR_RETRIES
    max_rounds: int = 50
    criterion: str = stability.DEFAULT_CRITERION  # steers the search (per run: learned_<f> | plain | loss_frac_<f>)
    criteria: List[str] = field(default_factory=lambda: list(stability.DEFAULT_CRITERIA))  # tables
    max_probes: Optional[int] = None  # budget in runs: no round starts that would exceed it (null = none)
    max_core_s: Optional[float] = None  # budget in core-seconds (wall_s x threads of every probe counted)
    cross_seed: bool = True  # where seeds disagree, probe each at the median seed's lo and hi
    share_brackets: bool = False  # the first seed searches alone; the others start from its eta_max (fewer runs)
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
    def __init__(self, *, params: Optional[Dict[str, Any]], seeds: Sequence[Any], lr_key: str, seed_key: str,
                 start_lr: float, bracket_factor: float, resolution: float, min_lr: float, max_lr: float,
                 check_above: int, error_retries: int, max_rounds: int, criterion: str, criteria: Sequence[str],
                 max_probes: Optional[int], max_core_s: Optional[float], cross_seed: bool, share_brackets: bool,
                 out_dir: Optional[str]) -> None:
        """Every argument comes from MaxStableLRSweeperConf (its defaults live there only)."""
        super().__init__()
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)  # type: ignore[assignment]
        self.params = _flatten(params)
        self.seeds = list(seeds)
        self.lr_key, self.seed_key = lr_key, seed_key
        self.search_kw = dict(start_lr=start_lr, bracket_factor=bracket_factor, resolution=resolution,
                              min_lr=min_lr, max_lr=max_lr, check_above=check_above, error_retries=error_retries)
        self.max_rounds = int(max_rounds)
        self.budget = lr_search.Budget(max_probes, max_core_s)
        self.criterion = str(criterion)
        self.criteria = list(dict.fromkeys([self.criterion, *criteria]))
        self.cross_seed, self.share_brackets = bool(cross_seed), bool(share_brackets)
        self.out_dir = out_dir
        # Judged probes are cached: a round re-reads no summary and recomputes the eta_max tables of the
        # settings that got new probes only, so its cost grows with its own probes, not all probes so far.
        self._values: Dict[int, Dict[str, Any]] = {}  # setting -> its resolved key values (from one summary)
        self._tables: Dict[int, Dict[str, pd.DataFrame]] = {}  # setting -> its eta_max tables
        self._tables_keys: List[str] = []
        self.bookkeeping_s: List[float] = []  # per round: the sweeper's own time (judging, tables, files)
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
        settings = [setting + self._filing() for setting in BasicSweeper.split_arguments(overrides, None)[0]]
        for ov in settings[0] if settings else []:
            if _key(ov) in (_key(self.lr_key), _key(self.seed_key)):
                raise ConfigError(_key(ov), ov.split("=", 1)[1],
                                  f"the search sets it; drop it and use hydra.sweeper.{'seeds' if _key(ov) == _key(self.seed_key) else 'start_lr/min_lr/max_lr'}")
        return settings

    def _filing(self) -> List[str]:
        """Probes are filed in W&B as job_type `probe`, grouped by the search's name (its out_dir), unless
        the command line set them (advise does); logger keys change no result (runs.HASH_EXCLUDED)."""
        assert self.config is not None
        logger = self.config.get("logger") or {}
        filing = []
        if "job_type" in logger and logger.get("job_type") in (None, "train"):
            filing.append("logger.job_type=probe")
        if "group" in logger and logger.get("group") is None:
            filing.append(f"logger.group='{Path(self.out_dir or str(self.config.hydra.sweep.dir)).name}'")
        return filing

    def _outcome(self, ret: JobReturn) -> tuple[Optional[bool], Dict[str, Any]]:
        """Stable/unstable under `criterion` from the job's summary.json; None (an error probe) when it has no result."""
        run_dir = OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir") if ret.hydra_cfg is not None else None
        summary = read_summary(Path(run_dir)) if run_dir else None
        status = summary["status"] if summary else None
        info: Dict[str, Any] = {"status": status if status is not None else "no_summary", "run_dir": run_dir,
                                **{k: (summary or {}).get(k) for k in PROBE_FIELDS},
                                "baseline_loss": stability.baseline_of(summary), "core_s": _core_s(ret, summary)}
        if ret.status == JobStatus.FAILED:
            try:
                ret.return_value
            except Exception as err:  # noqa: BLE001 - the job's own exception, kept as text
                info["job_error"] = f"{type(err).__name__}: {err}"
        if status not in runs.FINISHED_STATUSES:
            return None, info
        row = pd.DataFrame([{"status": status, **{k: _float(info[k]) for k in JUDGED_FIELDS}}])
        return bool(stability.judge(row, [self.criterion], keys=[])["stable"].iloc[0]), info

    # -- the sweep ---------------------------------------------------------------------------
    def sweep(self, arguments: List[str]) -> Any:
        """Bad settings end in one line on stderr and exit 2 (warmup_lab.errors), before any job runs."""
        try:
            lr_search.LRSearch(**self.search_kw)
            if self.max_rounds < 1:
                raise ConfigError("hydra.sweeper.max_rounds", self.max_rounds, "must be >= 1 (0 probes nothing)")
            lr_search.Budget(self.budget.max_probes, self.budget.max_core_s)
            if not self.seeds:
                raise ConfigError("hydra.sweeper.seeds", "[]", "give at least one seed, e.g. hydra.sweeper.seeds=[0,1,2,3,4]")
            for name in self.criteria:
                stability.criterion(name)
            if stability.criterion(self.criterion).kind == "near_best":
                raise ConfigError("hydra.sweeper.criterion", self.criterion,
                                  "near_best needs every run of a setting; steer with plain or loss_frac_<f>")
            settings = self._settings(arguments)
            if not settings:
                swept = [f"{k}={v}" for k, v in self.params.items()] + list(arguments)
                raise ConfigError("settings grid", " ".join(swept), "it is empty; give every swept key at least one value")
        except ValueError as err:  # ConfigError is one
            print(f"error: hydra.sweeper: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG)
        return self._sweep(settings)

    def _sweep(self, settings: List[List[str]]) -> Any:
        assert self.config is not None and self.launcher is not None
        out_dir = Path(self.out_dir or str(self.config.hydra.sweep.dir))
        out_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, out_dir / "multirun.yaml")
        searches = {(i, seed): lr_search.LRSearch(**self.search_kw) for i in range(len(settings)) for seed in self.seeds}
        print(f"[max_stable_lr] {len(settings)} settings x {len(self.seeds)} seeds = {len(searches)} searches; "
              f"search criterion {stability.criterion(self.criterion).text}; out: {out_dir}", flush=True)
        returns: List[Sequence[JobReturn]] = []
        job_idx, rounds, crossed, over_budget = 0, 0, set(), False
        waiting = {(i, seed) for i, seed in searches if self.share_brackets and seed != self.seeds[0]}
        while rounds < self.max_rounds:
            self._start_from_hints(searches, waiting)
            crossed |= self._cross_seed(len(settings), searches, crossed)
            pending = [(key, s.next_lr()) for key, s in searches.items() if not s.done and key not in waiting]
            if not pending:
                break
            if not self.budget.allows(len(pending)):
                print(f"[max_stable_lr] budget reached: {self.budget.text()}; {len(pending)} more probes would exceed it",
                      flush=True)
                over_budget = True
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
            started = time.perf_counter()
            for ((i, seed), lr), ret in zip(pending, results):
                stable, info = self._outcome(ret)
                searches[(i, seed)].record(lr, stable, round=rounds, **info)
                self.budget.spend(info["core_s"])
            n_done = sum(s.done for s in searches.values())
            print(f"[max_stable_lr] round {rounds}: {len(batch)} probes "
                  f"({_count(searches, rounds)}) | "
                  f"searches done {n_done}/{len(searches)}, remaining {len(searches) - n_done} | spent "
                  f"{self.budget.text()}", flush=True)
            self._write(out_dir, settings, searches, rounds, changed={i for (i, _), _ in pending})
            self.bookkeeping_s.append(time.perf_counter() - started)
            print(f"[max_stable_lr] round {rounds} bookkeeping {self.bookkeeping_s[-1]:.3f} s", flush=True)
        unfinished = sum(not s.done for s in searches.values())
        if unfinished:
            why = f"the budget ({self.budget.text()})" if over_budget else f"max_rounds={self.max_rounds}"
            log.warning(f"{why} stopped the sweep with {unfinished} searches unfinished (done=False)")
        tables = self._write(out_dir, settings, searches, rounds)
        print(self._table(settings, searches, tables), flush=True)
        return returns

    def _start_from_hints(self, searches: Dict[Any, lr_search.LRSearch], waiting: set) -> None:
        """share_brackets: once a setting's first seed is done, its other seeds start from its eta_max."""
        for i, seed in sorted(waiting, key=str):
            first = searches[(i, self.seeds[0])]
            if first.done:
                searches[(i, seed)] = lr_search.LRSearch(**self.search_kw, hint=first.result()["eta_max"])
                waiting.discard((i, seed))

    def _cross_seed(self, n_settings: int, searches: Dict[Any, lr_search.LRSearch], crossed: set) -> set:
        """Settings whose seeds are all done get, once, probes at the median seed's edge."""
        if not self.cross_seed or len(self.seeds) < 2:
            return set()
        now = set()
        for i in range(n_settings):
            group = [searches[(i, seed)] for seed in self.seeds]
            if i in crossed or not all(s.done for s in group):
                continue
            for s, lrs in zip(group, lr_search.disagreement_lrs([s.result() for s in group])):
                s.probe_also(lrs)
            now.add(i)
        return now

    # -- outputs -----------------------------------------------------------------------------
    def _keys(self, settings: List[List[str]], searches: Dict[Any, lr_search.LRSearch]) -> List[str]:
        """`setting` (the grid index), the resolved SETTING_KEYS the probes' summaries carry, and the
        overrides that can change a result (not logger, threads, runs_root, train.progress...)."""
        for i in range(len(settings)):
            if i not in self._values:  # read once: a setting's key values do not change between probes
                found = _setting_values([p for seed in self.seeds for p in searches[(i, seed)].probes])
                if found:
                    self._values[i] = found
        resolved = [k for k in SETTING_KEYS if any(v.get(k) is not None for v in self._values.values())]
        extra = [k for k in dict.fromkeys(_key(ov.split("=", 1)[0]) for setting in settings for ov in setting)
                 if k not in resolved and not _excluded(k)]
        return ["setting", *resolved, *extra]

    def _probes(self, i: int, setting: List[str], searches: Dict[Any, lr_search.LRSearch], keys: List[str]) -> pd.DataFrame:
        """Every resolved probe of setting `i` as a stability probe row, labelled by `keys`."""
        values = self._values.get(i, {})
        label = {**{k: values.get(k) for k in keys}, "setting": i,
                 **{_key(k): v for k, v in (ov.split("=", 1) for ov in setting)}}
        rows = []
        for seed in self.seeds:
            for p in searches[(i, seed)].resolved_probes():
                status = p["status"] if p["status"] in runs.FINISHED_STATUSES else runs.ERROR  # unstable
                rows.append({**{k: label.get(k) for k in keys}, "seed": seed, "lr": p["lr"], "status": status,
                             **{k: _float(p.get(k)) for k in JUDGED_FIELDS}})
        return pd.DataFrame(rows, columns=[*keys, "seed", "lr", "status", *JUDGED_FIELDS])

    def _write(self, out_dir: Path, settings: List[List[str]], searches: Dict[Any, lr_search.LRSearch],
               rounds: int, changed: Optional[set] = None) -> Dict[str, pd.DataFrame]:
        """search.json and the eta_max tables. `changed`: the settings with new probes since the last
        write (their tables are recomputed, the others' reused); None: every table, the comparisons too."""
        keys = self._keys(settings, searches)
        if keys != self._tables_keys:  # a setting's key values arrived: every label changes
            self._tables, self._tables_keys = {}, keys
        # compare() pairs settings that differ only in the warmup: the grid index and raw overrides vary too
        vary = [k for k in keys if k not in SETTING_KEYS or k in stability.VARY]
        redo = set(range(len(settings))) if changed is None else set(changed) | (set(range(len(settings))) - set(self._tables))
        for i in sorted(redo):
            judged = stability.judge(self._probes(i, settings[i], searches, keys), self.criteria, keys)
            per_seed = stability.eta_max_per_seed(judged, keys)
            self._tables[i] = {stability.ETA_FILE: per_seed, stability.SUMMARY_FILE: stability.eta_max_summary(per_seed, keys),
                               stability.P_STABLE_FILE: stability.p_stable(judged, keys)}
        tables = {name: pd.concat([self._tables[i][name] for i in range(len(settings))], ignore_index=True)
                  for name in (stability.ETA_FILE, stability.SUMMARY_FILE, stability.P_STABLE_FILE)}
        if changed is None:
            tables[stability.COMPARE_FILE] = stability.compare(tables[stability.ETA_FILE], keys, vary)
        per_setting = {i: g.drop(columns="setting").to_dict("records")
                       for i, g in tables[stability.SUMMARY_FILE].groupby("setting")}
        report = {
            "criterion": {"search": self.criterion, "text": stability.criterion(self.criterion).text,
                          "tables": self.criteria,
                          "error": f"no finished summary: retried {self.search_kw['error_retries']}x, then unstable"},
            "search": {**self.search_kw, "lr_key": self.lr_key, "seed_key": self.seed_key, "seeds": self.seeds,
                       "max_rounds": self.max_rounds, "cross_seed": self.cross_seed,
                       "share_brackets": self.share_brackets},
            "rounds": rounds,
            "spent": self.budget.as_dict(),
            "settings": [{"setting": i, "overrides": dict(ov.split("=", 1) for ov in setting),
                          "seeds": [{"seed": seed, **searches[(i, seed)].result()} for seed in self.seeds],
                          "summary": per_setting.get(i, [])} for i, setting in enumerate(settings)],
        }
        runs.atomic_write_text(out_dir / SEARCH_FILE, json.dumps(json_safe(report), indent=2, default=str) + "\n")
        stability.write_tables(out_dir, tables)
        return tables

    def _table(self, settings: List[List[str]], searches: Dict[Any, lr_search.LRSearch],
               tables: Dict[str, pd.DataFrame]) -> str:
        fmt = lambda v: "-" if v is None or v != v else f"{v:.4g}"  # noqa: E731
        summary = tables[stability.SUMMARY_FILE]
        lines = [f"criterion: {stability.criterion(self.criterion).text}; probes on a "
                 f"x{self.search_kw['resolution']:.4g} grid; aggregate = median over seeds, "
                 f"{stability.INTERVAL_TEXT} {stability.CI_LEVEL:.0%} interval",
                 f"{'set':>3} {'seed':>5} {'eta_max':>9} {'hi':>9} {'probes':>6}  flags / overrides that vary"]
        varying = {ov for setting in settings for ov in setting if any(ov not in other for other in settings)}
        for i, setting in enumerate(settings):
            for seed in self.seeds:
                r = searches[(i, seed)].result()
                flags = [f for f in ("non_monotone", "below_min", "above_max") if r[f]]
                flags += ["errors"] * bool(r["n_errors"]) + ["unfinished"] * (not r["done"])
                lines.append(f"{i:>3} {seed!s:>5} {fmt(r['eta_max']):>9} {fmt(r['hi']):>9} {r['n_probes']:>6}  "
                             f"{','.join(flags) or 'ok'} {' '.join(ov for ov in setting if ov in varying)}")
            for _, a in summary[summary["setting"] == i].iterrows():
                lines.append(f"{i:>3} {'all':>5} {fmt(a['estimate']):>9} {'':>9} {a['n_probes']:>6}  median "
                             f"[{fmt(a['ci_low'])}, {fmt(a['ci_high'])}], n={a['n_seeds']}, {a['criterion']}"
                             + (" (steers)" if a["criterion"] == self.criterion else "")
                             + (f", censored {a['censored_seeds']}" if a["censored_seeds"] else ""))
        lines += [f"criteria: {stability.criteria_text(self.criteria)}", *self._did_not_learn(settings, searches)]
        return "\n".join(lines)

    def _did_not_learn(self, settings: List[List[str]], searches: Dict[Any, lr_search.LRSearch]) -> List[str]:
        """A warning line per setting whose stable runs at the edge (each seed's eta_max probe) did not
        learn: final train loss above the task's baseline_loss (l0 where none), i.e. not learned_1."""
        out = []
        for i in range(len(settings)):
            edge = [p for seed in self.seeds for p in searches[(i, seed)].resolved_probes()
                    if p["stable"] and p["lr"] == searches[(i, seed)].result()["eta_max"]]
            rows = pd.DataFrame([{"status": p["status"], **{k: _float(p.get(k)) for k in JUDGED_FIELDS}} for p in edge])
            if rows.empty:
                continue
            learned = stability.judge(rows, ["learned_1"], keys=[])["stable"]
            if not learned.all():
                worst = rows.loc[~learned.to_numpy(), "final_train_loss"].max()
                out.append(f"warning: setting {i}: {int((~learned).sum())} of {len(rows)} stable runs at the edge did "
                           f"not learn (final train loss up to {worst:.4g}, not below the task's baseline_loss or "
                           f"l0); criterion {self.criterion} counts them as stable: steer with "
                           f"{stability.DEFAULT_CRITERION}")
        return out


def _excluded(key: str) -> bool:
    """Overrides that name, place or display a run (runs.HASH_EXCLUDED), or only set how it computes
    (runs.EXECUTION_KEYS): not setting keys."""
    parts = tuple(key.split("."))
    return (parts[0] in runs.HASH_EXCLUDED + runs.EXECUTION_KEYS
            or any(parts[: len(n)] == n for n in runs.HASH_EXCLUDED_NESTED))


def _core_s(ret: JobReturn, summary: Optional[Dict[str, Any]]) -> Optional[float]:
    """A probe's cost: its wall_s x the torch threads it ran with (its `threads`, else torch's default)."""
    wall = (summary or {}).get("wall_s")
    if not isinstance(wall, (int, float)):
        return None
    threads = OmegaConf.select(ret.cfg, "threads", default=None) if ret.cfg is not None else None
    if not threads:
        import torch

        threads = torch.get_num_threads()
    return float(wall) * int(threads)


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _setting_values(probes: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The resolved setting (task, model, warmup shape and length, ...) read from one of its probes' summaries,
    so that rows of different arms or presets stay distinguishable in a report."""
    for probe in probes:
        summary = read_summary(Path(probe["run_dir"])) if probe.get("run_dir") else None
        if summary and "task" in summary:
            return {k: summary.get(k) for k in SETTING_KEYS}
    return {}


def _count(searches: Dict[Any, lr_search.LRSearch], rounds: int) -> str:
    """Stable/unstable/error counts among the probes of round `rounds`."""
    probes = [p for s in searches.values() for p in s.probes if p.get("round") == rounds]
    n_stable = sum(p["stable"] is True for p in probes)
    n_err = sum(p["stable"] is None for p in probes)
    return f"{n_stable} stable, {len(probes) - n_stable - n_err} unstable, {n_err} errors"
