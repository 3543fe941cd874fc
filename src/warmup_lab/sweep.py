"""`warmup-lab sweep [name]` (what `make sweep` runs): experiment presets as Hydra multiruns, then their report.

An experiment is `warmup_lab/conf/experiment/<name>.yaml` or a folder `warmup_lab/conf/experiment/<name>/`
of presets (one per task family, say) that share `sweeps/<name>/` as their runs root; the report goes to
`results/<name>/`. Both are relative to the current directory, so an installed `warmup-lab` works anywhere.
`default` is the study that `make sweep` runs: warmup_length, the full study (`make study`, experiment
`study`: 8 seeds, a 2^(1/2) LR grid) at smoke scale (both task families, 3 seeds, 3 warmup lengths, every
other LR of the study's grid). Re-running skips every finished run (runs are keyed by config hash), so an
interrupted sweep resumes. While it runs, a line every few seconds says how many runs are done, diverged
and remaining; at the end, how much of the machine's core time went into training steps.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from warmup_lab import runs, timing
from warmup_lab.cli import check_override_form
from warmup_lab.errors import ConfigError, exit_on_user_error
from warmup_lab.paths import CONF_DIR
from warmup_lab.summary import read_summary

DEFAULT = ["warmup_length"]
CORE_TIME_FILE = "core_time.json"  # under sweeps/<name>/: the last sweep command's breakdown (make bench-sweep)
TIMING_LOG = ".timing.jsonl"  # under sweeps/<name>/: one line per job of the last sweep command (timing.py)
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
    raise ConfigError("EXPERIMENT", name, f"a preset: {valid}")


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
        summary = read_summary(run_dir)
        status = summary["status"] if summary else "running"
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


def core_use(root: Path, since: float, wall: float, cores: int) -> str:
    """Core-seconds spent in training steps by the runs finished since `since`, against wall x cores."""
    busy, n = 0.0, 0
    for run_dir in runs.find_run_dirs([root]):
        path = run_dir / runs.SUMMARY_FILE
        summary = read_summary(run_dir) if path.exists() and path.stat().st_mtime >= since else None
        if summary and summary.get("samples_per_s", math.nan) > 0 and summary.get("batch_size"):  # nan: not > 0
            busy += summary["steps_run"] * summary["batch_size"] / summary["samples_per_s"]
            n += 1
    share = busy / (wall * cores) if wall > 0 else 0.0
    return (f"training steps of {n} runs: {busy:.0f} core-s of {wall:.0f} s wall x {cores} cores = {share:.0%} "
            "of the machine's core time")


def breakdown(jobs: dict[str, float], report_s: float, idle_s: float, wall: float, cores: int) -> dict[str, float]:
    """Core-seconds by where they went: the jobs' phases (timing.py), the report, idle cores, the rest.

    `idle_s` is the machine's idle core time over the sweep (/proc/stat): on an idle machine, cores that
    waited for a tail or for the launcher. The rest is what no job claimed: the Hydra process that
    composes and dispatches, W&B's service processes, the OS. The report is one process: its wall time.
    """
    rows = {timing.PHASES[k]: jobs.get(k, 0.0) for k in timing.PHASES}
    rows["report"] = report_s
    rows["idle cores (tails, waits)"] = idle_s if math.isfinite(idle_s) else 0.0
    rows["other (launcher process, W&B service, OS)"] = max(0.0, wall * cores - sum(rows.values()))
    return rows


def breakdown_lines(rows: dict[str, float], wall: float, cores: int, jobs: int) -> list[str]:
    total = wall * cores
    width = max(len(name) for name in rows)
    return [f"where the core time went: {wall:.0f} s wall x {cores} cores = {total:.0f} core-s, {jobs} jobs",
            *(f"  {name:<{width}}  {value:8.1f} core-s  {value / total if total else 0:6.1%}"
              for name, value in rows.items())]


def run_preset(preset: str, launcher: str, extra: list[str], timing_log: Path | None = None) -> int:
    """One preset as a Hydra multirun in its own process group; SIGTERM/SIGINT here stop the whole group.

    Hydra and every worker it starts share that group, so a signal forwarded to it reaches each run:
    runs save a checkpoint at their next step and exit. If this script dies without forwarding
    (SIGKILL), Hydra and its workers notice their parent is gone and do the same (train.py).
    """
    from warmup_lab.lifecycle import LAUNCHER_PID_ENV

    cmd = [sys.executable, "-m", "warmup_lab.train", "-m", f"experiment={preset}", "train.progress=false", *extra]
    if launcher != "preset":
        cmd.append(f"hydra/launcher={launcher}")
    print(f"$ {' '.join(cmd[1:])}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "HYDRA_FULL_ERROR": "1",
           LAUNCHER_PID_ENV: str(os.getpid())}
    env.setdefault("WANDB_SILENT", "true")
    if timing_log is not None:
        env[timing.TIMING_ENV] = str(timing_log.resolve())
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        received.append(signum)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        print(f"sweep stopped by {signal.Signals(received[0]).name}: finished runs are kept, stopped runs saved a "
              "checkpoint; run the same command again to resume", file=sys.stderr, flush=True)
        sys.exit(130 if received[0] == signal.SIGINT else 75)
    return code


def run_experiment(name: str, presets: list[str], launcher: str, extra: list[str], timing_log: Path) -> int:
    """All presets of one experiment share its runs root; progress counts them together."""
    sizes = [grid_size(p, extra) for p in presets]
    total = None if any(s is None for s in sizes) else sum(sizes)  # type: ignore[arg-type]
    progress = Progress(name, Path("sweeps") / name, total)
    progress.start()
    try:
        failed = sum(run_preset(p, launcher, extra, timing_log) != 0 for p in presets)
    finally:
        progress.stop.set()
    print(progress.line(), flush=True)
    return failed


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", nargs="?", default="default", help="preset name, or 'default'")
    ap.add_argument("--report-only", action="store_true", help="only rebuild the report(s)")
    ap.add_argument("--launcher", default="preset", help="hydra/launcher to use (default: the preset's own)")
    ap.add_argument("--scale", default="cpu", choices=["cpu", "full"],
                    help="cpu: the offline CPU-scale presets; full: their GPU/CIFAR-10 twins (<name>_full)")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = ap.parse_args(argv)
    check_override_form(args.overrides)
    names = DEFAULT if args.experiment == "default" else [args.experiment]
    if args.scale == "full":
        names = [f"{n}_full" for n in names]
    began = time.time()
    failed = 0
    cores = os.cpu_count() or 1
    for name in names:
        presets = presets_of(name)
        root = Path("sweeps") / name
        started, idle0 = time.time(), timing.idle_core_s()
        timing_log = root / TIMING_LOG
        if not args.report_only:
            root.mkdir(parents=True, exist_ok=True)
            timing_log.unlink(missing_ok=True)  # this command's jobs only
            failed += run_experiment(name, presets, args.launcher, args.overrides, timing_log)
        report_began = time.time()
        # Relative paths, so the committed report.md names `sweeps/<name>`, not this machine's path.
        module = REPORT_MODULES.get(name.removesuffix("_full"), "warmup_lab.report")
        source = root
        if args.report_only and not runs.find_run_dirs([root]) and Path(f"results/{name}").is_dir():
            source = Path(f"results/{name}")  # a fresh clone: the committed runs tables and curves
            print(f"[{name}] no runs under {root}: the report is rebuilt from {source}", flush=True)
        cmd = [sys.executable, "-m", module, str(source), "--out", f"results/{name}", "--experiment", name]
        code = subprocess.call(cmd)
        failed += code != 0
        if not args.report_only:
            wall = time.time() - started
            print(f"[{name}] {core_use(root, started, wall, cores)}", flush=True)
            jobs = timing.read_log(timing_log)
            rows = breakdown(jobs, time.time() - report_began, timing.idle_core_s() - idle0, wall, cores)
            for line in breakdown_lines(rows, wall, cores, int(jobs["jobs"])):
                print(f"[{name}] {line}", flush=True)
            (root / CORE_TIME_FILE).write_text(json.dumps(
                {"wall_s": wall, "cores": cores, "jobs": int(jobs["jobs"]), "core_s": rows}, indent=1) + "\n")
    print(f"sweep {args.experiment}: {time.time() - began:.0f}s wall, {failed} step(s) failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
