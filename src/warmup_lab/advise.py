"""`warmup-lab advise [options] <overrides>`: how much warmup does this model need, and how high can its
LR go? One command, for any task, model and optimizer the Hydra config describes.

It measures eta_max without warmup and with a few warmup lengths (default 0 and up to 10% of the
config's T) over seeds, with the max-stable-LR sweeper (every probe an ordinary run: resumable, any
launcher, progress on stderr), judges every probe under a criterion that requires learning (fixed and
printed before any run), and recommends a (warmup, peak LR) pair by the rules of docs/advise.md
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

from warmup_lab import runs, search, stability
from warmup_lab.advice import ADVICE_FILE, FIGURE_FILE, TABLE_FILE, Plan, advise_from, answer_lines, figure, markdown
from warmup_lab.errors import ConfigError, exit_on_user_error, require
from warmup_lab.lr_find import compose_train, options_and_overrides
from warmup_lab.summary import json_safe, read_summary

SEARCH_DIR = "search"
EST_PROBES_PER_SEARCH = 6  # planning only: bracket ~2 + bisect 2 + check 1 + cross-seed ~1 (x2^(1/2) grid)
MIN_SEEDS, MAX_SEEDS = 3, 5
LADDER = 3  # confirmation LRs at the longest warmup: s, s/margin^2, s/margin^4


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
    """Seeds and warmup lengths that fit a budget in runs (EST_PROBES_PER_SEARCH probes per search):
    at least MIN_SEEDS seeds, dropping intermediate lengths before seeds (0 and the longest stay)."""
    lengths = list(warmups) if warmups else default_warmups(total_steps)
    n = seeds or MAX_SEEDS
    if max_probes is not None and seeds is None:
        n = max(MIN_SEEDS, min(MAX_SEEDS, max_probes // (EST_PROBES_PER_SEARCH * len(lengths))))
        while not warmups and len(lengths) > 2 and n * len(lengths) * EST_PROBES_PER_SEARCH > max_probes:
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
    search.Budget(max_probes, max_core_s)  # bad values: one line now
    start_lr = min(max(float(cfg.optimizer.lr), search.MIN_LR), search.MAX_LR)
    out = Path(args.out) if args.out else Path("advice") / f"{cfg.name}-{runs.config_hash(cfg)}"
    baseline = _baseline(cfg)
    crit_line = (f"criterion (fixed before any run): {stability.criterion(criterion).text}; this task's baseline_loss "
                 + (f"= {baseline:.4g}" if baseline is not None else "is not declared: l0 stands in"))
    print(crit_line, file=sys.stderr, flush=True)
    print(f"plan: warmup {args.shape} {p.warmups} steps of T={total}, seeds {p.seeds}, start LR {start_lr:g}, grid "
          f"x{args.resolution:.4g}; budget {args.budget or 'none'}", file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    group = f"advise-{out.name}"
    reserve = len(p.seeds) * (len(p.warmups) + LADDER - 1)  # confirmation runs (confirm_targets), every seed
    sweep_probes = None if max_probes is None else max(1, max_probes - reserve)
    sweep_core_s = None if max_core_s is None else max_core_s * (1 - reserve / (reserve + sweep_probes_est(p)))
    cmd = sweep_command(overrides, p, start_lr, criterion, args, out, sweep_probes, sweep_core_s, group)
    cmd = [c for c in cmd if c not in start]  # the user's LR is the search's start, not a fixed override
    run_sweep(cmd)
    found = json.loads((out / SEARCH_DIR / "search.json").read_text())
    probes = probes_of(found)
    spent = dict(found.get("spent") or {})
    left_runs = None if max_probes is None else max_probes - spent.get("probes", 0)
    left_core_s = None if max_core_s is None else max_core_s - spent.get("core_s", 0.0)
    extra = confirm([o for o in overrides if o not in start], p, probes, criterion, args, start_lr, group,
                    left_runs, left_core_s)
    probes = pd.concat([probes, extra], ignore_index=True) if len(extra) else probes
    spent.update(probes=spent.get("probes", 0) + len(extra), core_s=spent.get("core_s", 0.0) + float(extra["core_s"].sum())
                 if len(extra) else spent.get("core_s", 0.0), max_probes=max_probes, max_core_s=max_core_s,
                 confirmation_runs=len(extra))
    advice = advise_from(probes, p, criterion, args.margin, args.shape, total)
    advice.update({"criterion_line": crit_line, "baseline_loss": baseline, "budget": args.budget,
                   "spent": spent, "start_lr": start_lr, "resolution": args.resolution,
                   "overrides": overrides, "out": str(out), "sweep_command": cmd[1:]})
    runs.atomic_write_text(out / ADVICE_FILE, json.dumps(json_safe(advice), indent=1, default=str) + "\n")
    table = pd.DataFrame(advice["frontier"])
    runs.atomic_write_text(out / TABLE_FILE, table.to_csv(index=False, lineterminator="\n"))
    runs.atomic_write_text(out / "advice.md", markdown(advice))
    figure(probes, advice, out / FIGURE_FILE)
    with contextlib.redirect_stdout(sys.stderr):  # W&B's own lines: stdout starts with the answer
        advice["wandb_dir"] = log_table(cfg, out, table, advice)
    return advice


def _threads(cfg: Any) -> int:
    """The torch threads a run of `cfg` uses (its `threads`, else torch's default here): core-s = wall_s x this."""
    import torch

    return int(cfg.get("threads") or torch.get_num_threads())


def sweep_probes_est(p: Plan) -> int:
    return EST_PROBES_PER_SEARCH * len(p.seeds) * len(p.warmups)


def confirm_targets(summary: pd.DataFrame, margin: float, start_lr: float, resolution: float,
                    ladder: int = LADDER) -> list[tuple[int, float]]:
    """(warmup, LR) cells to run on every seed, in order: at the longest warmup with a usable interval, the
    ladder s, s/margin^2, s/margin^4, ... (`ladder` rungs; s = the largest grid LR <= the interval's low end
    / margin), since the LR of the lowest final loss often lies well below the edge; then s at every other
    warmup length, longest first."""
    usable = summary[summary["ci_low_censored"].isin(["", "above"]) & (summary["ci_low"] > 0)]
    out: list[tuple[int, float]] = []
    step = math.log(resolution)
    for i, (_, f) in enumerate(usable.sort_values("warmup_steps", ascending=False).iterrows()):
        top = math.log(f["ci_low"] / margin / start_lr) / step
        for rung in range(ladder if i == 0 else 1):
            k = math.floor(top - rung * 2 * math.log(margin) / step + 1e-9)
            lr = search.grid_lr(start_lr, resolution, k)
            if lr >= search.MIN_LR:
                out.append((int(f["warmup_steps"]), lr))
    return out


def confirm(overrides: list[str], p: Plan, probes: pd.DataFrame, criterion: str, args: argparse.Namespace,
            start_lr: float, group: str, left_runs: int | None, left_core_s: float | None) -> pd.DataFrame:
    """Run confirm_targets on every seed that has not run them (a Hydra multirun per cell: normal runs, the
    user's launcher), while the budget lasts: the pick's candidates then include LRs with the margin,
    measured on every seed."""
    from warmup_lab.advice import KEYS

    if probes.empty:
        return probes
    per_seed = stability.eta_max_per_seed(stability.judge(probes, [criterion], KEYS), KEYS)
    summary = stability.eta_max_summary(per_seed, KEYS)
    rows, mean_cost = [], float(probes["core_s"].mean()) if probes["core_s"].notna().any() else 0.0
    for w, lr in confirm_targets(summary, args.margin, start_lr, args.resolution):
        done = set(probes[(probes["warmup_steps"] == w) & (probes["lr"].sub(lr).abs() <= 1e-9 * lr)]["seed"])
        seeds = [s for s in p.seeds if s not in done]
        if not seeds:
            continue
        if (left_runs is not None and len(seeds) > left_runs - len(rows)) or (
                left_core_s is not None and (len(rows) + len(seeds)) * mean_cost > left_core_s):
            continue
        fixed = [*overrides, f"schedule.warmup={args.shape}", "schedule.warmup_ratio=null", f"schedule.warmup_steps={w}",
                 f"optimizer.lr={lr!r}"]
        print(f"confirm: warmup {w}, LR {lr:.4g} on seeds {seeds}", file=sys.stderr, flush=True)
        run_sweep([sys.executable, "-m", "warmup_lab.train", "-m", *fixed, f"seed={','.join(map(str, seeds))}",
                   f"++logger.group={group}", "++logger.job_type=probe", "train.progress=false"])
        for seed in seeds:
            cfg = compose_train([*fixed, f"seed={seed}"])
            summary_ = read_summary(runs.run_dir_for(cfg)) or {}
            status = summary_.get("status") if summary_.get("status") in runs.FINISHED_STATUSES else runs.ERROR
            rows.append({"warmup_steps": w, "seed": seed, "lr": lr, "status": status,
                         **{k: _num(summary_.get(k)) for k in ("init_loss", "final_train_loss", "final_eval_loss")},
                         "baseline_loss": stability.baseline_of(summary_),
                         "core_s": _num(summary_.get("wall_s")) * _threads(cfg)})
    return pd.DataFrame(rows, columns=probes.columns)


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
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed, first-seed+1, ...")
    p.add_argument("--warmups", help="warmup lengths in steps, e.g. 0,6,12 (default: 0 and 3 up to 10%% of T)")
    p.add_argument("--shape", default="linear", help="warmup shape (schedule.warmup), default linear")
    p.add_argument("--criterion", help=f"per-run stability criterion (default {stability.DEFAULT_CRITERION})")
    p.add_argument("--margin", type=float, default=2 ** 0.5,
                   help="the pick's LR x margin must stay <= the low end of eta_max's interval (default 2^0.5)")
    p.add_argument("--resolution", type=float, default=2 ** 0.5, help="search grid factor (default 2^0.5)")
    p.add_argument("--out", help="where advice.json/.md/.png go (default advice/<name>-<config hash>)")
    return options_and_overrides(p, argv)


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    advice = advise(overrides, args)
    print("\n".join(answer_lines(advice)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
