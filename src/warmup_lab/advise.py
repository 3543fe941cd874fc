"""`warmup-lab advise [options] <overrides>`: how much warmup does this model need, and how high can its
LR go? One command, for any task, model and optimizer the Hydra config describes.

It runs the LR range test first (warmup_lab.lr_find, one run of 100 steps) and starts the search where the
range test's loss blew up; it measures eta_max without warmup and with a few warmup lengths (default 0 and
up to 10% of the config's T) over seeds, with the max-stable-LR sweeper (every probe an ordinary run:
resumable, any launcher, progress on stderr); it descends from each warmup's margin LR in steps of
margin^2 while the median final loss falls; it judges every run under a criterion that requires learning
(fixed and printed before any run), and recommends a (warmup, peak LR) pair by the rules of docs/advise.md
(warmup_lab.advice). The first line on stdout is the answer; advice.json, advice.md and advice.png go
to --out, and the frontier is logged as a W&B table when the config's logger is wandb.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from warmup_lab import lr_search, runs, stability
from warmup_lab.advice import ADVICE_FILE, FIGURE_FILE, TABLE_FILE, Plan, advise_from, answer_lines, figure, markdown
from warmup_lab.errors import ConfigError, exit_on_user_error, require
from warmup_lab import lr_find as lr_find_mod
from warmup_lab.lr_find import compose_train, lr_find, options_and_overrides, ramp_overrides, sets_ramp
from warmup_lab.summary import json_safe, read_summary

SEARCH_DIR = "search"
EST_PROBES_PER_SEARCH = 5  # planning only: bracket ~2 from the range test's edge + bisect 2 + check 1 (x2^(1/2) grid)
EST_RUNGS = 3  # planning only: descent rungs per warmup length and seed (s, s/margin^2, s/margin^4)
MAX_RUNGS = 6  # the descent stops at s/margin^10 even while the loss still falls
MIN_SEEDS, MAX_SEEDS = 3, 5


def parse_budget(text: str | None) -> tuple[int | None, float | None]:
    """'60runs' -> (60, None); '900core-s' -> (None, 900.0); None -> (None, None)."""
    if text is None:
        return None, None
    m = re.fullmatch(r"\s*([0-9.]+)\s*(runs?|core-?s|core-seconds?)\s*", text)
    if not m:
        raise ConfigError("--budget", text, "a number of runs or core-seconds with its unit, e.g. 60runs or 900core-s")
    value = float(m.group(1))
    require(value > 0, "--budget", text, "a positive amount")
    return (int(value), None) if m.group(2).startswith("run") else (None, value)


def default_warmups(total_steps: int, n: int = 3, max_ratio: float = 0.1) -> list[int]:
    """0 and `n` lengths evenly up to floor(max_ratio x T), distinct and >= 1."""
    top = int(math.floor(max_ratio * total_steps))
    return [0, *sorted({max(1, round(top * (i + 1) / n)) for i in range(n)} if top >= 1 else [])]


def plan(total_steps: int, max_probes: int | None, seeds: int | None, warmups: list[int] | None,
         first_seed: int) -> Plan:
    """Seeds and warmup lengths that fit a budget in runs (the range test, then EST_PROBES_PER_SEARCH probes
    and EST_RUNGS descent runs per warmup length and seed): at least MIN_SEEDS seeds, dropping
    intermediate lengths before seeds (0 and the longest stay)."""
    lengths = list(warmups) if warmups else default_warmups(total_steps)
    n, per = seeds or MAX_SEEDS, EST_PROBES_PER_SEARCH + EST_RUNGS
    if max_probes is not None and seeds is None:
        n = max(MIN_SEEDS, min(MAX_SEEDS, (max_probes - 1) // (per * len(lengths))))
        while not warmups and len(lengths) > 2 and n * len(lengths) * per > max_probes - 1:
            lengths.pop(len(lengths) // 2)
    return Plan(seeds=list(range(first_seed, first_seed + n)), warmups=lengths)


def sweep_command(overrides: Sequence[str], p: Plan, start_lr: float, criterion: str, args: argparse.Namespace,
                  out: Path, max_probes: int | None, max_core_s: float | None, group: str) -> list[str]:
    """The max-stable-LR sweep that measures the frontier (one search per warmup length and seed)."""
    criteria = list(dict.fromkeys([criterion, *stability.DEFAULT_CRITERIA]))
    return [sys.executable, "-m", "warmup_lab.train", "-m", "hydra/sweeper=max_stable_lr", *overrides,
            f"schedule.warmup={args.shape}", "schedule.warmup_ratio=null",
            f"++hydra.sweeper.params.schedule.warmup_steps=\"{','.join(map(str, p.warmups))}\"",
            f"hydra.sweeper.seeds=[{','.join(map(str, p.seeds))}]", f"hydra.sweeper.start_lr={start_lr!r}",
            f"hydra.sweeper.resolution={args.resolution!r}", f"hydra.sweeper.criterion={criterion}",
            f"hydra.sweeper.criteria=[{','.join(criteria)}]", f"hydra.sweeper.out_dir={out / SEARCH_DIR}",
            f"hydra.sweeper.max_probes={'null' if max_probes is None else max_probes}",
            f"hydra.sweeper.max_core_s={'null' if max_core_s is None else max_core_s}",
            f"++logger.group={group}", "++logger.job_type=probe", "train.progress=false"]


def probes_of(search_json: dict[str, Any]) -> pd.DataFrame:
    """Every resolved probe of the sweep (errors a retry resolved dropped; errors kept count as unstable)."""
    rows = []
    for setting in search_json["settings"]:
        w = int(setting["overrides"]["schedule.warmup_steps"])
        for seed in setting["seeds"]:
            for p in seed["probes"]:
                if p["stable"] is None and not p.get("error_as_unstable"):
                    continue
                status = p["status"] if p["status"] in runs.FINISHED_STATUSES else runs.ERROR
                rows.append({"warmup_steps": w, "seed": seed["seed"], "lr": p["lr"], "status": status,
                             **{k: _num(p.get(k)) for k in ("init_loss", "final_train_loss", "final_eval_loss",
                                                            "baseline_loss", "core_s")}})
    return pd.DataFrame(rows, columns=["warmup_steps", "seed", "lr", "status", "init_loss", "final_train_loss",
                                       "final_eval_loss", "baseline_loss", "core_s"])


def _num(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def run_sweep(cmd: list[str]) -> None:
    """A sweep in its own process, its console (progress) on our stderr: stdout starts with the answer."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the max-stable-LR sweep exited with {done.returncode} (its messages are above); "
                           f"re-run the same command to resume: {' '.join(cmd[1:])}")


def log_table(cfg: Any, out: Path, table: pd.DataFrame, advice: dict[str, Any]) -> str | None:
    """The frontier and the pick as a W&B table (job_type advise) when the config logs to W&B."""
    from omegaconf import open_dict

    from warmup_lab.loggers import make_logger

    with open_dict(cfg):
        cfg.logger.job_type = "advise"
    logger = make_logger(cfg, out, {"advice": advice["answer"], "criterion": advice["criterion"]})
    inner = getattr(logger, "inner", None)
    if inner is None:
        return None
    import wandb

    inner.run.log({"advice": wandb.Table(dataframe=table.astype(str))})
    inner.run.summary["answer"] = advice["answer"]
    logger.finish()
    return str(getattr(inner.run, "dir", out))


def advise(overrides: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    overrides = list(overrides)
    start = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == "optimizer.lr"]
    for ov in overrides:
        key = ov.split("=", 1)[0].lstrip("+~")
        if key in ("seed", "schedule.warmup_steps", "schedule.warmup_ratio", "schedule.warmup", "out"):
            raise ConfigError(key, ov.split("=", 1)[-1], "advise sets it: use --seeds/--first-seed, --warmups, --shape")
    cfg = compose_train(overrides)
    total = int(cfg.train.steps)
    max_probes, max_core_s = parse_budget(args.budget)
    warmups = [int(x) for x in args.warmups.split(",")] if args.warmups else None
    require(warmups is None or (all(0 <= w < total for w in warmups) and 0 in warmups), "--warmups", args.warmups,
            f"comma-separated lengths in [0, T={total}), 0 (no warmup) among them")
    require(args.margin >= 1, "--margin", args.margin, ">= 1 (the factor the pick stays below eta_max's low end)")
    require(args.seeds is None or args.seeds >= 1, "--seeds", args.seeds, "an integer >= 1")
    criterion = args.criterion or stability.DEFAULT_CRITERION
    stability.criterion(criterion)  # refused here, before any run, when unknown
    require(stability.criterion(criterion).kind != "near_best", "--criterion", criterion,
            "a per-run criterion (learned_<f>, loss_frac_<f>, plain): near_best needs every run of a setting")
    p = plan(total, max_probes, args.seeds, warmups, args.first_seed)
    lr_search.Budget(max_probes, max_core_s)  # bad values: one line now
    user_lr = min(max(float(cfg.optimizer.lr), lr_search.MIN_LR), lr_search.MAX_LR)
    out = Path(args.out) if args.out else Path("advice") / "-".join(  # another budget: another folder
        [cfg.name, runs.config_hash(cfg), *([re.sub(r"[^0-9A-Za-z.-]+", "", args.budget)] if args.budget else [])])
    baseline = _baseline(cfg)
    crit_line = (f"criterion (fixed before any run): {stability.criterion(criterion).text}; this task's baseline_loss "
                 + (f"= {baseline:.4g}" if baseline is not None else "is not declared: l0 stands in"))
    print(crit_line, file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    group = f"advise-{out.name}"
    rest = [o for o in overrides if o not in start]  # the user's LR anchors the grid, it is not a fixed override
    ramp = None if args.no_range_test else range_test(rest, args.first_seed, group)
    start_lr = user_lr if ramp is None else start_from_range_test(ramp, user_lr, args.resolution)
    rt_runs, rt_core_s = (0, 0.0) if ramp is None else (1, ramp["core_s"])
    fits = runs_in(max_core_s, ramp, total) if max_probes is None and args.seeds is None else None
    if fits is not None:  # a budget in core-seconds sets the plan too, through the range test's cost per step
        p = plan(total, fits, None, warmups, args.first_seed)
    print(f"plan: warmup {args.shape} {p.warmups} steps of T={total}, seeds {p.seeds}, grid x{args.resolution:.4g}; "
          f"budget {args.budget or 'none'}" + (f" (about {fits} runs of T steps at the range test's cost per step)"
                                               if fits is not None else ""), file=sys.stderr, flush=True)
    print(f"search: starts at LR {start_lr:g} (" + ("the config's optimizer.lr" if ramp is None else
          f"the range test's {_edge_text(ramp)}; {rt_core_s:.0f} core-s") + ")", file=sys.stderr, flush=True)
    hold = len(p.seeds) * len(p.warmups) * EST_RUNGS  # the descent keeps this, or half of what is left if less
    reserve = min(hold, (max_probes or 0) // 2)
    sweep_probes = None if max_probes is None else max(1, max_probes - rt_runs - reserve)
    share = sweep_probes_est(p) / (sweep_probes_est(p) + hold)
    sweep_core_s = None if max_core_s is None else max(1e-9, (max_core_s - rt_core_s) * share)
    extra, made = pd.DataFrame(), -1
    while True:  # further passes give the search what the descent left, while the budget stopped it
        cmd = sweep_command(rest, p, start_lr, criterion, args, out, sweep_probes, sweep_core_s, group)
        run_sweep(cmd)
        found = json.loads((out / SEARCH_DIR / "search.json").read_text())
        searched = probes_of(found)
        spent = dict(found.get("spent") or {})
        spent.update(probes=spent.get("probes", 0) + rt_runs + len(extra),
                     core_s=spent.get("core_s", 0.0) + rt_core_s + (float(extra["core_s"].sum()) if len(extra) else 0.0))
        left_runs = None if max_probes is None else max_probes - spent["probes"]
        left_core_s = None if max_core_s is None else max_core_s - spent["core_s"]
        every = pd.concat([searched, extra], ignore_index=True) if len(extra) else searched
        new = confirm(rest, p, every, criterion, args, start_lr, group, left_runs, left_core_s)
        extra = pd.concat([extra, new], ignore_index=True) if len(extra) else new
        spent.update(probes=spent["probes"] + len(new), core_s=spent["core_s"] + (float(new["core_s"].sum()) if len(new)
                                                                                    else 0.0))
        unfinished = any(not seed["done"] for setting in found["settings"] for seed in setting["seeds"])
        if not unfinished or (max_probes is None and max_core_s is None) or found["spent"]["probes"] == made:
            break  # nothing left to search, no budget to share, or the last pass could not fit a round
        made = found["spent"]["probes"]
        if max_probes is not None:
            left = max_probes - spent["probes"]
            more = left - min(hold, left // 2)
            if more < len(p.seeds) * len(p.warmups):
                break
            sweep_probes = found["spent"]["probes"] + more
            sweep_core_s = None if max_core_s is None else (
                found["spent"]["core_s"] + (max_core_s - spent["core_s"]) * more / left)
            print(f"search: {left} runs left after the descent; the unfinished searches get {more} of them, the "
                  f"descent the rest", file=sys.stderr, flush=True)
        else:
            left_s = max_core_s - spent["core_s"]
            more_s = left_s * share
            if more_s < mean_probe_core_s(every) * len(p.seeds) * len(p.warmups):
                break
            sweep_core_s = found["spent"]["core_s"] + more_s
            print(f"search: {left_s:.0f} core-s left after the descent; the unfinished searches get {more_s:.0f} of "
                  "them, the descent the rest", file=sys.stderr, flush=True)
    probes = pd.concat([searched, extra], ignore_index=True) if len(extra) else searched
    spent.update(max_probes=max_probes, max_core_s=max_core_s, confirmation_runs=len(extra), range_test_runs=rt_runs,
                 range_test_core_s=rt_core_s)
    advice = advise_from(probes, p, criterion, args.margin, args.shape, total)
    advice.update({"criterion_line": crit_line, "baseline_loss": baseline, "budget": args.budget,
                   "spent": spent, "start_lr": start_lr, "resolution": args.resolution, "range_test": ramp,
                   "overrides": overrides, "out": str(out), "sweep_command": cmd[1:]})
    runs.atomic_write_text(out / ADVICE_FILE, json.dumps(json_safe(advice), indent=1, default=str) + "\n")
    table = pd.DataFrame(advice["frontier"])
    runs.atomic_write_text(out / TABLE_FILE, table.to_csv(index=False, lineterminator="\n"))
    runs.atomic_write_text(out / "advice.md", markdown(advice))
    figure(advice, out / FIGURE_FILE)
    with contextlib.redirect_stdout(sys.stderr):  # W&B's own lines: stdout starts with the answer
        advice["wandb_dir"] = log_table(cfg, out, table, advice)
    return advice


def _threads(cfg: Any) -> int:
    """The torch threads a run of `cfg` uses (its `threads`, else torch's default here): core-s = wall_s x this."""
    import torch

    return int(cfg.get("threads") or torch.get_num_threads())


def runs_in(max_core_s: float | None, ramp: dict[str, Any] | None, total_steps: int) -> int | None:
    """How many runs of T steps a budget in core-seconds buys, the range test (which counts as one run) included,
    at the range test's cost per step; None without a core-second budget or a range test that cost something."""
    if max_core_s is None or ramp is None or not ramp.get("core_s", 0) > 0 or not ramp.get("stopped_at"):
        return None
    per_run = ramp["core_s"] / ramp["stopped_at"] * total_steps
    return 1 + max(0, int((max_core_s - ramp["core_s"]) // per_run))


def mean_probe_core_s(probes: pd.DataFrame) -> float:
    """The mean core-seconds of the probes so far (0 before any): what the next round is estimated to cost."""
    return float(probes["core_s"].mean()) if len(probes) and probes["core_s"].notna().any() else 0.0


def sweep_probes_est(p: Plan) -> int:
    return EST_PROBES_PER_SEARCH * len(p.seeds) * len(p.warmups)


def range_test(overrides: list[str], seed: int, group: str) -> dict[str, Any]:
    """The LR range test (warmup_lab.lr_find's defaults) on advise's first seed, as a normal run through the
    user's launcher; lr_find then reads the finished run (it trains nothing) and writes its json and figure.
    The ramp sets optimizer.lr, train.steps and the schedule itself: the user's values of those stay out."""
    keep = [o for o in overrides if not sets_ramp(o)]
    ovs = [*keep, f"seed={seed}", f"++logger.group={group}", "train.progress=false"]
    run_sweep([sys.executable, "-m", "warmup_lab.train", "-m", *ovs, *ramp_overrides(lr_find_mod.MIN_LR,
               lr_find_mod.MAX_LR, lr_find_mod.STEPS), "++logger.job_type=lr-find"])
    with contextlib.redirect_stdout(sys.stderr):
        found = lr_find(ovs)
    cfg = compose_train([*ovs, *ramp_overrides(lr_find_mod.MIN_LR, lr_find_mod.MAX_LR, lr_find_mod.STEPS)])
    steep = found["steepest"]["lr"] if found["steepest"] else None
    return {"run_dir": found["run_dir"], "seed": seed, "steepest_lr": steep, "edge_lr": _edge(found),
            "blew_up": found["stopped_at"] < found["steps"],
            "stopped_at": found["stopped_at"], "steps": found["steps"], "status": found["status"],
            "core_s": _num(found["wall_s"]) * _threads(cfg)}


def _edge_text(ramp: dict[str, Any]) -> str:
    return (f"loss blew up at LR {ramp['edge_lr']:.3g}" if ramp["blew_up"]
            else f"loss did not blow up up to the ramp's top, LR {ramp['edge_lr']:.3g}")


def _edge(found: dict[str, Any]) -> float:
    """Where the range test's smoothed loss blew up (its curve's last LR: the first past 4 x the best, or the
    last finite one); the ramp's top when it never did."""
    return float(found["lrs"][-1]) if found["lrs"] else float(found["max_lr"])


def start_from_range_test(found: dict[str, Any], user_lr: float, resolution: float) -> float:
    """The search's first LR: the largest point of the user's grid (user_lr x resolution^k) at or below where
    the range test blew up, in [MIN_LR, MAX_LR]. A constant LR there rarely survives a full run, so the
    bracket moves down from it, a few rounds from eta_max, however far the user's LR was."""
    k = math.floor(math.log(found["edge_lr"] / user_lr) / math.log(resolution) + 1e-9)
    return min(max(lr_search.grid_lr(user_lr, resolution, k), lr_search.MIN_LR), lr_search.MAX_LR)


def descent(cells_: pd.DataFrame, summary: pd.DataFrame, n_seeds: int, margin: float, start_lr: float,
            resolution: float, max_rungs: int = MAX_RUNGS) -> list[tuple[int, float]]:
    """The next cell to run of each warmup length's descent, longest warmup first; none once it has ended.

    A warmup length with a usable low end of its eta_max interval descends from s (the largest grid LR <=
    low end / margin) in rungs of margin^2 (s, s/margin^2, s/margin^4, ...): the next rung runs only while
    each stable rung's median final train loss (every seed) is lower than the stable rung's above it (a rung
    unstable on a seed is passed over: the descent goes on). The search's probes crowd around the edge, while the LR of the lowest final loss
    often lies well below it."""
    usable = summary[summary["ci_low_censored"].isin(["", "above"]) & (summary["ci_low"] > 0)]
    step = math.log(resolution)
    k_rung = max(1, round(2 * math.log(margin) / step))
    out = []
    for _, f in usable.sort_values("warmup_steps", ascending=False).iterrows():
        w = int(f["warmup_steps"])
        top = math.floor(math.log(f["ci_low"] / margin / start_lr) / step + 1e-9)
        prev = None
        for rung in range(max_rungs):
            lr = lr_search.grid_lr(start_lr, resolution, top - rung * k_rung)
            if lr < lr_search.MIN_LR:
                break
            at = cells_[(cells_["warmup_steps"] == w) & ((cells_["lr"] - lr).abs() <= 1e-9 * lr)]
            if at.empty or int(at["n"].iloc[0]) < n_seeds:
                out.append((w, lr))
                break
            if not bool(at["every_seed_stable"].iloc[0]):
                continue  # unstable on a seed below the margin LR: the edge is lower here, go on down
            loss = float(at["median_train_loss"].iloc[0])
            if prev is not None and not loss < prev:
                break
            prev = loss
    return out


def confirm(overrides: list[str], p: Plan, probes: pd.DataFrame, criterion: str, args: argparse.Namespace,
            start_lr: float, group: str, left_runs: int | None, left_core_s: float | None) -> pd.DataFrame:
    """Run each warmup's descent (`descent`) on every seed that has not run its cells (a Hydra multirun per
    cell: normal runs, the user's launcher), while the budget lasts; a warmup whose next cell does not fit
    stops there. The pick then chooses among LRs below the edge, measured on every seed."""
    from warmup_lab.advice import KEYS, cells

    if probes.empty:
        return probes.iloc[:0]
    summary = stability.eta_max_summary(stability.eta_max_per_seed(stability.judge(probes, [criterion], KEYS), KEYS),
                                        KEYS)
    rows: list[dict[str, Any]] = []
    stopped: set[int] = set()
    mean_cost = mean_probe_core_s(probes)
    while True:
        every = pd.concat([probes, pd.DataFrame(rows, columns=probes.columns)], ignore_index=True) if rows else probes
        table = cells(stability.judge(every, [criterion], KEYS))
        targets = [(w, lr) for w, lr in descent(table, summary, len(p.seeds), args.margin, start_lr, args.resolution)
                   if w not in stopped]
        if not targets:
            return pd.DataFrame(rows, columns=probes.columns)
        for w, lr in targets:
            done = set(every[(every["warmup_steps"] == w) & (every["lr"].sub(lr).abs() <= 1e-9 * lr)]["seed"])
            seeds = [s for s in p.seeds if s not in done]
            if not seeds or (left_runs is not None and len(seeds) > left_runs - len(rows)) or (
                    left_core_s is not None and (len(rows) + len(seeds)) * mean_cost > left_core_s):
                stopped.add(w)
                continue
            rows += run_cell(overrides, w, lr, seeds, args.shape, group)


def run_cell(overrides: list[str], w: int, lr: float, seeds: list[int], shape: str, group: str) -> list[dict[str, Any]]:
    """One (warmup, LR) cell on `seeds` as a Hydra multirun (the user's launcher); one probe row per seed."""
    fixed = [*overrides, f"schedule.warmup={shape}", "schedule.warmup_ratio=null", f"schedule.warmup_steps={w}",
             f"optimizer.lr={lr!r}"]
    print(f"descent: warmup {w}, LR {lr:.4g} on seeds {seeds}", file=sys.stderr, flush=True)
    run_sweep([sys.executable, "-m", "warmup_lab.train", "-m", *fixed, f"seed={','.join(map(str, seeds))}",
               f"++logger.group={group}", "++logger.job_type=probe", "train.progress=false"])
    rows = []
    for seed in seeds:
        cfg = compose_train([*fixed, f"seed={seed}"])
        summary_ = read_summary(runs.run_dir_for(cfg)) or {}
        status = summary_.get("status") if summary_.get("status") in runs.FINISHED_STATUSES else runs.ERROR
        rows.append({"warmup_steps": w, "seed": seed, "lr": lr, "status": status,
                     **{k: _num(summary_.get(k)) for k in ("init_loss", "final_train_loss", "final_eval_loss")},
                     "baseline_loss": stability.baseline_of(summary_),
                     "core_s": _num(summary_.get("wall_s")) * _threads(cfg)})
    return rows


def _baseline(cfg: Any) -> float | None:
    """The task's declared baseline_loss (built once, on the CPU, before any run: the criterion is fixed)."""
    import torch

    from warmup_lab.tasks import build_task

    return build_task(cfg, torch.device("cpu")).baseline_loss


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="warmup-lab advise", description=__doc__.split("\n\n")[0],
                                epilog="Every other argument is a Hydra override of the train config (task=..., "
                                       "model._target_=..., hydra/launcher=joblib); rules: docs/advise.md")
    p.add_argument("--budget", help="runs or core-seconds, e.g. 60runs or 900core-s (default: no limit)")
    p.add_argument("--seeds", type=int, help=f"seeds per warmup length (default: {MAX_SEEDS}, or what fits the budget, "
                                             f">= {MIN_SEEDS})")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed+1, ... (default 0)")
    p.add_argument("--warmups", help="warmup lengths in steps, e.g. 0,6,12 (default: 0 and 3 up to 10%% of T)")
    p.add_argument("--shape", default="linear", help="warmup shape (schedule.warmup), default linear")
    p.add_argument("--criterion", help=f"per-run stability criterion (default {stability.DEFAULT_CRITERION})")
    p.add_argument("--margin", type=float, default=2 ** 0.5,
                   help="the pick's LR x margin must stay <= the low end of eta_max's interval (default 2^0.5)")
    p.add_argument("--resolution", type=float, default=2 ** 0.5, help="search grid factor (default 2^0.5)")
    p.add_argument("--no-range-test", action="store_true",
                   help="start the search at the config's optimizer.lr instead of where the LR range test blew up")
    p.add_argument("--out", help="where advice.json/.md/.png go (default advice/<name>-<config hash>[-<budget>])")
    return options_and_overrides(p, argv)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    advice = advise(overrides, args)
    print("\n".join(answer_lines(advice)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
