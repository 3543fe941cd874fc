"""A synthetic sweep of N run directories, written by the trainer's own writers, to time the report at scale.

    python scripts/synth_sweep.py OUT [--runs 10000] [--steps 120]

One real run (the default study's size: 120 steps, the reverse task) gives the templates: its
summary.json fields, config.yaml and CSV columns. Each synthetic run copies them and varies the key
values (10 warmup settings x 20 LRs x seeds), the outcome (a stable run's loss falls; above a
per-seed threshold that grows with the warmup length a run fails to train, or diverges and stops
early) and the per-step curves. metrics.csv and eval.csv are written by record.MetricsFile, the LR
column by the real schedule, and the summary by the trainer's summary writer: the report reads them
exactly as it reads a real sweep. Deterministic in --seed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from warmup_lab import runs
from warmup_lab.record import MetricsFile
from warmup_lab.summary import write_summary
from warmup_lab.schedules.build import build_schedule

WARMUPS = ("none@0", "linear@10", "linear@30", "linear@60", "cosine@10", "cosine@30", "cosine@60",
           "exponential@30", "constant@30@0.1", "constant@60@0.1")
LRS = np.logspace(-4, 0, 20)


def template(steps: int) -> tuple[dict[str, Any], str]:
    """The summary and config.yaml of one real run of `steps` steps."""
    from hydra import compose, initialize_config_dir

    from warmup_lab.paths import CONF_DIR
    from warmup_lab.job import train

    overrides = ["task=reverse", f"train.steps={steps}", "train.eval_every=0", "train.eval_batches=1",
                 "train.checkpoint_every=0", "train.progress=false", "threads=1", "logger=none",
                 "schedule=linear_constant", "schedule.warmup_steps=10"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        summary = dict(train(cfg, run_dir))
        return summary, (run_dir / runs.CONFIG_FILE).read_text()


def curves(rng: np.random.Generator, lr: np.ndarray, l0: float, ratio: float, steps: int) -> tuple[np.ndarray, str, int | None]:
    """Loss per step and the outcome, for a run at `ratio` = target LR / its stability threshold."""
    t = np.arange(steps)
    noise = 1 + 0.03 * rng.standard_normal(steps)
    if ratio <= 1:
        rate = 0.06 * math.sqrt(ratio)
        return l0 * (0.15 + 0.85 * np.exp(-rate * t)) * noise, runs.COMPLETED, None
    if ratio <= 2:
        return l0 * (1.0 + 0.02 * np.sin(t / 7)) * noise, runs.FAILED, None
    at = int(rng.integers(5, max(6, steps // 2)))
    loss = l0 * np.exp(np.maximum(0, t - at + 3) * 1.2) * noise
    loss[at] = math.inf
    return loss[: at + 1], runs.DIVERGED, at


def write_run(root: Path, base: dict[str, Any], config_text: str, setting: str, lr: float, seed: int,
              steps: int, lr_curve: np.ndarray, rng: np.random.Generator) -> None:
    shape, tw, *_ = setting.split("@")
    threshold = 0.01 * (1 + int(tw) / 20) * math.exp(0.3 * math.sin(seed))
    l0 = base["init_loss"] * (1 + 0.01 * math.cos(seed))
    loss, status, diverged = curves(rng, lr_curve, l0, lr / threshold, steps)
    chash = hashlib.sha256(f"{setting}|{lr:.6g}|{seed}".encode()).hexdigest()[:10]
    run_dir = root / f"{base['task']}-{base['optimizer']}-{shape}-constant-{chash}"
    run_dir.mkdir(parents=True, exist_ok=True)
    config = re.sub(r"(?m)^seed: .*$", f"seed: {seed}", config_text)
    config = re.sub(r"(?m)^(  lr): .*$", rf"\1: {lr!r}", config)
    runs.atomic_write_text(run_dir / runs.CONFIG_FILE, config)
    metrics = MetricsFile(run_dir)
    grad = np.abs(loss) * 0.5 + 0.1
    spikes = rng.random(len(loss)) < 0.01
    for step in range(len(loss)):
        metrics.add_step(step, float(loss[step]), float(lr_curve[step]), float(grad[step]), bool(spikes[step]))
    final = float(loss[-1])
    acc = float(np.clip(1 - final / l0, 0, 1)) if math.isfinite(final) else 0.0
    metrics.add_eval({"step": len(loss), "eval_loss": final * 1.05, "eval_acc": acc, "eval_exact_match": acc ** 4})
    metrics.flush()
    summary = copy.deepcopy(base)
    summary.update(
        status=status, steps_run=len(loss), config_hash=chash, run_dir=str(run_dir), experiment="synthetic",
        warmup=shape, warmup_steps=int(tw), target_lr=float(lr), seed=seed, init_loss=float(loss[0]),
        final_train_loss=final, final_eval_loss=final * 1.05, final_eval_acc=acc, final_eval_exact_match=acc ** 4,
        best_eval_loss=final * 1.05 if math.isfinite(final) else None, best_eval_acc=acc,
        diverged_step=diverged, spike_events=int(spikes.sum()), spike_steps=int(spikes.sum()),
        first_spike_step=int(np.argmax(spikes)) if spikes.any() else None,
        peak_lr=float(lr_curve[: len(loss)].max()), nominal_peak_lr=float(lr),
        wall_s=float(base["wall_s"]) * len(loss) / steps, resumed_from=None,
    )
    summary["lr_groups"] = {**base["lr_groups"], "warmup": shape, "warmup_steps": int(tw), "target_lr": float(lr),
                            "peak_lr": float(lr), "group_base_lrs": [float(lr)]}
    write_summary(run_dir, summary)


def generate(out: Path, n_runs: int, steps: int, seed: int = 0) -> int:
    base, config_text = template(steps)
    rng = np.random.default_rng(seed)
    schedules: dict[tuple[str, float], np.ndarray] = {}
    per_seed = len(WARMUPS) * len(LRS)
    for i in range(n_runs):
        setting, lr, run_seed = WARMUPS[i % len(WARMUPS)], float(LRS[(i // len(WARMUPS)) % len(LRS)]), i // per_seed
        if (setting, lr) not in schedules:
            shape, tw, *ratio = setting.split("@")
            given = {"warmup": shape, "warmup_steps": int(tw), "decay": "constant"}
            sched = build_schedule({**given, "init_lr_ratio": float(ratio[0])} if ratio else given, steps, lr)
            schedules[(setting, lr)] = np.asarray(sched.curve(steps))
        write_run(out, base, config_text, setting, lr, run_seed, steps, schedules[(setting, lr)], rng)
    return n_runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"synth_sweep: {args.out} is not empty; give a new folder", file=sys.stderr)
        return 2
    start = time.perf_counter()
    n = generate(args.out, args.runs, args.steps, args.seed)
    print(f"synth_sweep: {n} runs of {args.steps} steps in {args.out} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
