"""`warmup-lab lr-find [options] <overrides>`: the LR range test, as Lightning's Tuner.lr_find and fastai's
lr_find do it, on any task the Hydra config describes.

The ramp is a schedule, not a trainer feature: a geometric warmup from min_lr to max_lr over the range
test's steps (lr(t) = min_lr (max_lr/min_lr)^(t/(N-1)), Lightning's `_ExponentialLR`), so the range
test is one ordinary run (its directory keyed by its config hash, resumable, any logger). From the run's
per-step losses it computes what both libraries compute:
- the smoothed loss: an exponential moving average with bias correction, avg = beta avg + (1-beta) loss,
  smoothed = avg / (1 - beta^(t+1)), beta = 0.98;
- early stop: the curve ends at the first step (t > 1) whose smoothed loss exceeds `early_stop` (4) x the
  best smoothed loss so far (the run's own divergence detector stops the training itself);
- Lightning's suggestion: the LR at the steepest descent of the smoothed loss (argmin of np.gradient
  over the points after the first `skip_begin` = 10 and before the last `skip_end` = 1);
- fastai's suggestion: the LR at the minimum of the smoothed loss over [N//10, -5), divided by 10.
Writes lr_find.json and lr_find.png (loss against LR on a log axis, both suggestions marked) next to
the run's files, and prints the answer as its first line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from warmup_lab import runs
from warmup_lab.errors import ConfigError, exit_on_user_error, require
from warmup_lab.summary import json_safe

RESULT_FILE, FIGURE_FILE = "lr_find.json", "lr_find.png"
MIN_LR, MAX_LR, STEPS = 1e-8, 1.0, 100  # Lightning's defaults
BETA, EARLY_STOP, SKIP_BEGIN, SKIP_END = 0.98, 4.0, 10, 1


def compose_train(overrides: Sequence[str]) -> Any:
    """The train config with `overrides`, as `python -m warmup_lab.train` composes it (group choices checked
    first, one line for an unknown option)."""
    from hydra import compose, initialize_config_dir

    from warmup_lab.cli import check_group_choices
    from warmup_lab.paths import CONF_DIR

    check_group_choices(overrides)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def ramp_overrides(min_lr: float, max_lr: float, steps: int) -> list[str]:
    """The range test as a schedule: geometric warmup min_lr -> max_lr reached at the last of `steps`."""
    return [f"optimizer.lr={max_lr!r}", f"train.steps={steps}", "schedule.name=lr_find", "schedule.warmup=geometric",
            f"schedule.warmup_steps={steps - 1}", "schedule.warmup_ratio=null", "schedule.step0=zero",
            f"schedule.init_lr_ratio={min_lr / max_lr!r}", "schedule.decay=constant", "train.eval_every=0",
            "train.checkpoint_every=0"]


def smooth(losses: Sequence[float], beta: float = BETA, early_stop: float | None = EARLY_STOP) -> list[float]:
    """Bias-corrected exponential moving average of `losses`, cut after the first step (t > 1) whose value
    exceeds early_stop x the best so far (Lightning's _LRCallback; a non-finite loss ends it too)."""
    out, avg, best = [], 0.0, math.inf
    for t, loss in enumerate(losses):
        if not math.isfinite(loss):
            break
        avg = beta * avg + (1 - beta) * loss
        value = avg / (1 - beta ** (t + 1))
        out.append(value)
        if early_stop is not None and t > 1 and value > early_stop * best:
            break
        best = min(best, value) if t > 0 else value
    return out


def steepest(lrs: Sequence[float], smoothed: Sequence[float], skip_begin: int = SKIP_BEGIN,
             skip_end: int = SKIP_END) -> int | None:
    """Index of Lightning's suggestion: argmin of the gradient of the smoothed loss (None: < 2 points)."""
    window = np.asarray(smoothed[skip_begin:len(smoothed) - skip_end], dtype=float)
    if len(window) < 2:
        return None
    return int(np.argmin(np.gradient(window))) + skip_begin


def minimum(smoothed: Sequence[float], n_steps: int) -> int | None:
    """Index of the minimum of the smoothed loss over fastai's window [n_steps//10, -5) (None: empty)."""
    lo, hi = n_steps // 10, len(smoothed) - 5
    if hi <= lo:
        return None
    return int(np.argmin(np.asarray(smoothed[lo:hi], dtype=float))) + lo


def analyse(lrs: Sequence[float], losses: Sequence[float], n_steps: int, beta: float = BETA,
            early_stop: float | None = EARLY_STOP) -> dict[str, Any]:
    """Both suggestions from one ramp's per-step (lr, loss)."""
    smoothed = smooth(losses, beta, early_stop)
    lrs = [float(x) for x in lrs[: len(smoothed)]]
    i_steep, i_min = steepest(lrs, smoothed), minimum(smoothed, n_steps)
    return {"lrs": lrs, "smoothed": smoothed, "stopped_at": len(smoothed), "steps": n_steps,
            "steepest": None if i_steep is None else {"step": i_steep, "lr": lrs[i_steep], "loss": smoothed[i_steep]},
            "minimum": None if i_min is None else {"step": i_min, "lr": lrs[i_min], "loss": smoothed[i_min]},
            "minimum_over_10": None if i_min is None else lrs[i_min] / 10}


def loss_at(result: dict[str, Any], lr: float) -> float:
    """The smoothed loss curve at `lr`, linear in log LR between its points (the ramp is geometric), so a
    suggestion between two steps is marked on the curve itself."""
    lrs, smoothed = np.log(np.asarray(result["lrs"], dtype=float)), np.asarray(result["smoothed"], dtype=float)
    return float(np.interp(math.log(lr), lrs, smoothed))


def figure(result: dict[str, Any], path: Path, title: str):
    """Smoothed loss against LR (log x), both suggestions marked on the curve, each with a legend entry.
    Returns the (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from warmup_lab.figstyle import DPI, log_axis, wrap

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    ax.plot(result["lrs"], result["smoothed"], color="black", lw=1.2, label="smoothed training loss (EMA, bias-corrected)")
    if result["minimum"]:
        m = result["minimum"]
        ax.plot(m["lr"], m["loss"], "v", color="tab:blue", mfc="none", ms=7, clip_on=False,
                label=f"minimum of the smoothed loss, LR {m['lr']:.3g}")
        lr10 = result["minimum_over_10"]
        ax.plot(lr10, loss_at(result, lr10), "D", color="tab:blue", ms=7, zorder=4, clip_on=False,
                label=f"suggestion: minimum/10 (fastai), LR {lr10:.3g}")
    if result["steepest"]:
        s = result["steepest"]
        ax.plot(s["lr"], s["loss"], "o", color="tab:red", ms=8, zorder=4, clip_on=False,
                label=f"suggestion: steepest descent (Lightning), LR {s['lr']:.3g}")
    ax.margins(x=0.03, y=0.08)
    log_axis(ax, "x")
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("smoothed training loss")
    ax.grid(alpha=0.3)
    ax.set_title(wrap(title, 75), fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return fig


def _read_steps(run_dir: Path) -> tuple[list[float], list[float]]:
    import csv

    with (run_dir / runs.METRICS_FILE).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [float(r["lr"]) for r in rows], [float(r["loss"]) if r["loss"] not in ("", "nan") else math.nan for r in rows]


def sets_ramp(override: str) -> bool:
    """Whether an override (`key=value`, `+key=value`, ... or a bare key) sets what the ramp owns: the LR, the
    number of steps and the whole schedule."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key in ("optimizer.lr", "train.steps") or key.startswith("schedule.")


def lr_find(overrides: Sequence[str], min_lr: float = MIN_LR, max_lr: float = MAX_LR, steps: int = STEPS,
            beta: float = BETA, early_stop: float | None = EARLY_STOP) -> dict[str, Any]:
    """Run (or reuse) the range test of the config `overrides` describe; write and return its result."""
    from omegaconf import open_dict

    from warmup_lab.job import train

    require(0 < min_lr < max_lr, "--min-lr/--max-lr", f"{min_lr}/{max_lr}", "0 < min_lr < max_lr")
    require(steps >= 20, "--steps", steps, "at least 20 (the suggestions skip the first tenth and the last points)")
    require(0 <= beta < 1, "--beta", beta, "0 <= beta < 1")
    ramp = [ov for ov in overrides if sets_ramp(ov)]
    if ramp:  # all of them in one line: a command copied from advise or train may hold several
        raise ConfigError("override" if len(ramp) == 1 else "overrides", " ".join(ramp),
                          f"lr-find sets the ramp itself: drop {'it' if len(ramp) == 1 else 'them'} "
                          "(use --min-lr/--max-lr/--steps)")
    cfg = compose_train([*overrides, *ramp_overrides(min_lr, max_lr, steps)])
    with open_dict(cfg):
        cfg.logger.job_type = "lr-find"
    run_dir = Path(cfg.out) if cfg.get("out") else runs.run_dir_for(cfg)
    with contextlib.redirect_stdout(sys.stderr):  # the run's own messages: stdout starts with the answer
        summary = train(cfg, run_dir)
    lrs, losses = _read_steps(run_dir)
    result = {**analyse(lrs, losses, steps, beta, early_stop), "min_lr": min_lr, "max_lr": max_lr, "beta": beta,
              "early_stop": early_stop, "overrides": list(overrides), "run_dir": str(run_dir),
              "status": summary.get("status"), "wall_s": summary.get("wall_s"), "threads": cfg.get("threads"),
              "task": summary.get("task"), "optimizer": summary.get("optimizer")}
    runs.atomic_write_text(run_dir / RESULT_FILE, json.dumps(json_safe(result), indent=1) + "\n")
    figure(result, run_dir / FIGURE_FILE, f"LR range test: {result['task']} + {result['optimizer']}, "
                                          f"{min_lr:g}..{max_lr:g} over {steps} steps (seed {cfg.seed})")
    return result


def answer_line(result: dict[str, Any]) -> str:
    fmt = lambda d: "none (too few points)" if d is None else f"{d:.3g}"  # noqa: E731
    steep = result["steepest"]["lr"] if result["steepest"] else None
    return (f"lr-find: steepest descent {fmt(steep)} (Lightning), minimum/10 {fmt(result['minimum_over_10'])} "
            f"(fastai); ramp {result['min_lr']:g}..{result['max_lr']:g} over {result['steps']} steps, curve ends "
            f"at step {result['stopped_at']} -> {Path(result['run_dir']) / RESULT_FILE}")


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="warmup-lab lr-find", description=__doc__.split("\n\n")[0],
                                epilog="Every other argument is a Hydra override of the train config (task=..., +arm=...).")
    p.add_argument("--min-lr", type=float, default=MIN_LR, help="LR of the ramp's first step (default %(default)g)")
    p.add_argument("--max-lr", type=float, default=MAX_LR, help="LR of the ramp's last step (default %(default)g)")
    p.add_argument("--steps", type=int, default=STEPS, help="ramp length in updates (default %(default)s)")
    p.add_argument("--beta", type=float, default=BETA, help="loss smoothing (default %(default)s)")
    p.add_argument("--early-stop", type=float, default=EARLY_STOP,
                   help="stop the curve when the smoothed loss exceeds this x its best (default %(default)s)")
    return options_and_overrides(p, argv)


def options_and_overrides(parser: argparse.ArgumentParser, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The command's options, and every other argument as a Hydra override; an unknown option or a stray
    word is one line."""
    from warmup_lab.cli import check_override_form

    args, overrides = parser.parse_known_args(list(argv))
    for arg in overrides:
        if arg.startswith("-"):
            raise ConfigError("option", arg, f"one of {parser.prog}'s options (--help), or a Hydra override KEY=VALUE")
    check_override_form(overrides)
    return args, overrides


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    args, overrides = parse(sys.argv[1:] if argv is None else argv)
    result = lr_find(overrides, args.min_lr, args.max_lr, args.steps, args.beta, args.early_stop)
    print(answer_line(result), flush=True)
    print(f"figure: {Path(result['run_dir']) / FIGURE_FILE}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
