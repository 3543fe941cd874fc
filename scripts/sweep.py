#!/usr/bin/env python
"""`make sweep [EXPERIMENT=name]`: run experiment presets as Hydra multiruns, then their report.

An experiment is `conf/experiment/<name>.yaml` or a folder `conf/experiment/<name>/` of presets (one
per task family, say) that share `sweeps/<name>/` as their runs root. `default` is the study that
`make sweep` runs: warmup_ablation and max_stable_lr at CPU scale, both task families.
Re-running skips every finished run (runs are keyed by config hash), so an interrupted sweep resumes.
While it runs, a line every few seconds says how many runs are done, diverged and remaining.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from warmup_lab import runs  # noqa: E402
from warmup_lab.paths import CONF_DIR  # noqa: E402

DEFAULT = ["warmup_ablation", "max_stable_lr"]
# Experiments whose report is their own module's (the generic report's tables do not fit them).
REPORT_MODULES = {"mechanisms": "warmup_lab.mechanisms"}


def experiment_names() -> list[str]:
    root = CONF_DIR / "experiment"
    names = {p.stem for p in root.glob("*.yaml")} | {p.name for p in root.iterdir() if p.is_dir()}
    return sorted(n for n in names if not n.endswith("_full"))


def presets_of(name: str) -> list[str]:
    folder = CONF_DIR / "experiment" / name
    if folder.is_dir():
        return [f"{name}/{p.stem}" for p in sorted(folder.glob("*.yaml"))]
    if (CONF_DIR / "experiment" / f"{name}.yaml").exists():
        return [name]
    valid = ", ".join(["default", *experiment_names()])
    raise SystemExit(f"error: EXPERIMENT={name!r} is not a preset; valid: {valid}")


def grid_size(preset: str, extra: list[str]) -> int | None:
    """Number of jobs of a grid preset (None for adaptive sweepers such as the max-stable-LR search)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}", *extra], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    if str(sweeper.get("_target_", "")).endswith("MaxStableLRSweeper"):
        return None
    params = dict(sweeper.get("params") or {})
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + extra)
    return math.prod(len(list(o.sweep_string_iterator())) for o in parsed if o.is_sweep_override())


def count(root: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run_dir in runs.find_run_dirs([root]):
        summary = runs.read_summary(run_dir)
        status = summary.get("status", "?") if summary else "running"
        counts[status] = counts.get(status, 0) + 1
    return counts


class Progress(threading.Thread):
    """Prints `done / diverged / remaining` for a runs root every `every` seconds."""

    def __init__(self, name: str, root: Path, total: int | None, every: float = 15.0):
        super().__init__(daemon=True)
        self.name_, self.root, self.total, self.every = name, root, total, every
        self.stop = threading.Event()
        self.began = time.time()

    def line(self) -> str:
        c = count(self.root)
        done = sum(c.get(s, 0) for s in runs.FINISHED_STATUSES)
        rest = f", {max(self.total - done, 0)} remaining" if self.total is not None else " (adaptive search: probes so far)"
        return (f"[{self.name_}] {done}{'/' + str(self.total) if self.total else ''} runs finished "
                f"({c.get(runs.DIVERGED, 0)} diverged, {c.get(runs.FAILED, 0)} failed_to_train, "
                f"{c.get(runs.ERROR, 0)} error){rest}, {time.time() - self.began:.0f}s")

    def run(self) -> None:
        while not self.stop.wait(self.every):
            print(self.line(), flush=True)


def run_preset(preset: str, launcher: str, extra: list[str]) -> int:
    cmd = [sys.executable, "-m", "warmup_lab.train", "-m", f"experiment={preset}", "train.progress=false", *extra]
    if launcher != "preset":
        cmd.append(f"hydra/launcher={launcher}")
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HYDRA_FULL_ERROR": "1"}
    env.setdefault("WANDB_SILENT", "true")
    return subprocess.call(cmd, cwd=REPO, env=env)


def run_experiment(name: str, presets: list[str], launcher: str, extra: list[str]) -> int:
    """All presets of one experiment share its runs root; progress counts them together."""
    sizes = [grid_size(p, extra) for p in presets]
    total = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    progress = Progress(name, REPO / "sweeps" / name, total)
    progress.start()
    try:
        failed = sum(run_preset(p, launcher, extra) != 0 for p in presets)
    finally:
        progress.stop.set()
    print(progress.line(), flush=True)
    return failed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", nargs="?", default="default", help="preset name, or 'default'")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report(s)")
    ap.add_argument("--launcher", default="preset", help="hydra/launcher to use (default: the preset's own)")
    ap.add_argument("--scale", default="cpu", choices=["cpu", "full"],
                    help="cpu: the offline CPU-scale presets; full: their GPU/CIFAR-10 twins (<name>_full)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args()
    names = DEFAULT if args.experiment == "default" else [args.experiment]
    if args.scale == "full":
        names = [f"{n}_full" for n in names]
    began = time.time()
    failed = 0
    for name in names:
        presets = presets_of(name)
        root = REPO / "sweeps" / name
        if not args.report_only:
            failed += run_experiment(name, presets, args.launcher, args.overrides)
        # Repo-relative paths, so the committed report.md names `sweeps/<name>`, not this machine's path.
        module = REPORT_MODULES.get(name.removesuffix("_full"), "warmup_lab.report")
        code = subprocess.call([sys.executable, "-m", module, str(root.relative_to(REPO)), "--out",
                                f"results/{name}", "--experiment", name], cwd=REPO)
        failed += code != 0
    print(f"sweep {args.experiment}: {time.time() - began:.0f}s wall, {failed} step(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
