"""`make bench-sweep`: where `make sweep`'s core time goes, measured in one fresh run of it.

    python scripts/bench_sweep.py [--experiment default] [--out results/bench_sweep] [--keep DIR]

Runs `python -m warmup_lab.sweep <experiment>` in an empty scratch directory (so no run is skipped and
the committed results/ are not touched), with what it prints streamed through. The sweep itself writes
the breakdown (sweeps/<name>/core_time.json: job phases from warmup_lab.timing, the report, the
machine's idle core time from /proc/stat, and the rest). This script adds the machine (cores, load
average before the start, torch) and the commit, and writes OUT/bench.json and OUT/README.md.
Issue 14's target: training steps >= 90% of wall x cores on an idle machine. A busy machine lowers it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.90
TRAIN = "training steps"


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


WANDB_PROBE = r"""
import os, shutil, sys, tempfile, time
from pathlib import Path
from hydra import compose, initialize_config_dir
from warmup_lab.job import train
from warmup_lab.paths import CONF_DIR
from warmup_lab.timing import idle_core_s
n, extra = int(sys.argv[1]), sys.argv[2:]
root = Path(tempfile.mkdtemp())
def once(i):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=warmup_length/resnet", "warmup_setting=none@0", "train.steps=10",
                                          "train.progress=false", f"seed={100 + i}", f"out={root / str(i)}", *extra])
    train(cfg)
once(-1)  # imports, data, W&B's service: not counted
busy0, t0 = time.perf_counter() * os.cpu_count() - idle_core_s(), time.perf_counter()
for i in range(n):
    once(i)
time.sleep(2)  # W&B's service finishes its share
print((time.perf_counter() * os.cpu_count() - idle_core_s() - busy0) / n)
shutil.rmtree(root, ignore_errors=True)
"""
WANDB_SETTINGS = {
    "no W&B (logger=none)": ["logger=none"],
    "W&B offline, lean (system_metrics=false, machine_metadata=false: the CPU arms)": ["logger=wandb"],
    "W&B offline, W&B's defaults (system metrics, machine metadata)":
        ["logger=wandb", "logger.system_metrics=true", "logger.machine_metadata=true"],
}


def wandb_cost(n: int = 10) -> dict[str, float]:
    """Machine core-s per 10-step run (every process, W&B's service included: /proc/stat), per logger setting."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = {}
    for name, extra in WANDB_SETTINGS.items():
        got = subprocess.run([sys.executable, "-c", WANDB_PROBE, str(n), *extra], env=env, capture_output=True,
                             text=True)
        out[name] = float(got.stdout.strip().splitlines()[-1]) if got.returncode == 0 else float("nan")
    return out


def readme(bench: dict) -> str:
    rows = bench["core_s"]
    total = bench["wall_s"] * bench["cores"]
    lines = [
        "# Where `make sweep`'s core time goes",
        "",
        f"Written by `make bench-sweep` (`python {Path(__file__).relative_to(REPO)}`): one fresh `make sweep` "
        f"(experiment `{bench['experiment']}`, {bench['jobs']} jobs) in an empty directory, commit "
        f"`{bench['commit']}`, {bench['cores']} cores, load average {bench['load_before']:.2f} before the start, "
        f"torch {bench['torch']}.",
        "",
        f"**Training steps: {rows[TRAIN]:.0f} core-s of {bench['wall_s']:.0f} s wall x {bench['cores']} cores = "
        f"{bench['train_share']:.1%}** of the machine's core time (target >= {TARGET:.0%} on an idle machine: "
        f"{'met' if bench['train_share'] >= TARGET else 'not met'}).",
        "",
        "| where | core-s | share |",
        "|---|---:|---:|",
        *(f"| {name} | {value:.1f} | {value / total:.1%} |" for name, value in rows.items()),
        "",
        "**W&B's share, alone.** Machine core-seconds per 10-step ResNet run in one process (every process on the "
        "machine counted from /proc/stat, W&B's service included; `wandb_cost()` in this script):",
        "",
        "| logger | core-s per run |",
        "|---|---:|",
        *(f"| {name} | {value:.3f} |" for name, value in bench.get("wandb_core_s_per_run", {}).items()),
        "",
        "How each line is measured (src/warmup_lab/timing.py, src/warmup_lab/sweep.py): every job appends the wall "
        "seconds of its phases to a log; a worker owns one core, so a job's wall time is that core's time. "
        "Idle cores come from /proc/stat over the sweep; `other` is wall x cores minus everything above it "
        "(the Hydra process that composes and dispatches, W&B's service processes, the OS).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="default")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "bench_sweep")
    ap.add_argument("--keep", type=Path, help="run in this directory and keep it (default: a temporary one)")
    args = ap.parse_args(argv)
    import torch

    from warmup_lab import sweep

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    scratch.mkdir(parents=True, exist_ok=True)
    load, commit = os.getloadavg()[0], _commit()  # the code that runs, before anything else is committed
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
           "WANDB_SILENT": "true"}
    began = time.time()
    code = subprocess.call([sys.executable, "-m", "warmup_lab.sweep", args.experiment], cwd=scratch, env=env)
    names = sweep.DEFAULT if args.experiment == "default" else [args.experiment]
    path = scratch / "sweeps" / names[0] / sweep.CORE_TIME_FILE
    if code != 0 or not path.exists():
        print(f"error: the sweep failed (exit {code}) or wrote no {path}; nothing written to {args.out}", file=sys.stderr)
        return 1
    bench = json.loads(path.read_text())
    bench.update(experiment=args.experiment, commit=commit, load_before=load, torch=torch.__version__,
                 started=time.strftime("%Y-%m-%d %H:%M", time.localtime(began)))
    bench["train_share"] = bench["core_s"][TRAIN] / (bench["wall_s"] * bench["cores"])
    bench["wandb_core_s_per_run"] = wandb_cost()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    (args.out / "README.md").write_text(readme(bench))
    print(f"training steps: {bench['train_share']:.1%} of the machine's core time -> {args.out}/README.md")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
