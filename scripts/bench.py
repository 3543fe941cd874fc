#!/usr/bin/env python
"""`make bench`: samples/s of the trainer next to a plain PyTorch loop, same model, batch and data.

Both loops run in this one process, interleaved in a rotating order, on a freshly
built task each time so they start from the same weights. The plain loop is the minimum: batch,
forward, backward, optimizer step. The trainer adds what it exists for: the LR schedule, grad-norm,
loss.item(), the spike/divergence/catapult detectors, per-step rows, the progress bar off, and (in the
`+wandb` row) an offline W&B mirror. Ratio = plain / trainer time per sample (1.00 = no overhead).
Usage: bench.py [--steps-scale X] [--repeats R] [--device cpu|cuda|auto] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from warmup_lab.loggers import make_logger  # noqa: E402
from warmup_lab.optim import build_optimizer  # noqa: E402
from warmup_lab.paths import CONF_DIR  # noqa: E402
from warmup_lab.tasks import build_task  # noqa: E402
from warmup_lab.trainer import Run, resolve_device, seed_everything  # noqa: E402

# (overrides, steps): enough steps that one measurement takes several seconds on a CPU.
CASES = {
    "resnet20 / shapes 32x32 / SGD": (["task=shapes", "data.size=32", "model=resnet20", "optimizer=sgd",
                                       "optimizer.lr=0.1"], 40),
    "transformer / reverse / AdamW": (["task=reverse", "optimizer=adamw", "optimizer.lr=1e-3"], 300),
}


def make_cfg(overrides: list[str], steps: int, device: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[*overrides, f"train.steps={steps}", "train.eval_every=0",
                                           "train.checkpoint_every=0", "train.progress=false",
                                           "train.eval_batches=1", f"device={device}", "logger=none"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain(cfg, warmup: int) -> float:
    device = resolve_device(str(cfg.device))
    seed_everything(int(cfg.seed))
    task = build_task(cfg, device)
    model, opt = task.model, build_optimizer(cfg.optimizer, task.model)
    model.train()
    steps = int(cfg.train.steps)
    for step in range(-warmup, steps):
        if step == 0:
            _sync(device)
            began = time.perf_counter()
        loss = task.loss(model, task.batch(step % steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * task.batch_size / (time.perf_counter() - began)


def trainer(cfg, logger_name: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        if logger_name != "none":
            cfg = cfg.copy()
            cfg.logger = {"name": "wandb", "project": "warmup-lab-bench", "entity": None, "group": "bench",
                          "mode": "offline", "dir": None, "tags": []}
        run = Run(cfg, Path(tmp))
        logger = make_logger(cfg, Path(tmp), {})
        try:
            summary = run.execute(logger)
        finally:
            logger.finish()
    return float(summary["samples_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply every case's step count")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = str(resolve_device(args.device))
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} repeats={args.repeats}; "
          f"samples/s, median (best) of the repeats; ratio = plain / trainer")
    print(f"{'case':32s} {'steps':>5s} {'plain':>16s} {'trainer':>16s} {'ratio':>12s} {'+wandb':>16s} {'ratio':>12s}")
    for name, (overrides, steps) in CASES.items():
        steps = max(1, int(steps * args.steps_scale))
        cfg = make_cfg(overrides, steps, device)
        plain(cfg, warmup=3)  # first-call costs (allocator, kernels) out of the measurement
        p, t, w = [], [], []
        modes = [(p, lambda: plain(cfg, warmup=0)), (t, lambda: trainer(cfg, "none")), (w, lambda: trainer(cfg, "wandb"))]
        for rep in range(args.repeats):
            k = rep % len(modes)
            for out, measure in modes[k:] + modes[:k]:  # rotate: no mode always runs first
                out.append(measure())
        mp, mt, mw = statistics.median(p), statistics.median(t), statistics.median(w)
        bp, bt, bw = max(p), max(t), max(w)
        print(f"{name:32s} {steps:5d} {mp:8.1f} ({bp:5.0f}) {mt:8.1f} ({bt:5.0f}) {mp / mt:5.3f} ({bp / bt:5.3f})"
              f" {mw:8.1f} ({bw:5.0f}) {mp / mw:5.3f} ({bp / bw:5.3f})", flush=True)


if __name__ == "__main__":
    main()
