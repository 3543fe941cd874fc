"""`make bench-report`: the report over a synthetic 10,000-run sweep, and the search's own cost at 1,000 probes.

    python scripts/bench_report.py [--runs 10000] [--sweep DIR] [--probes-settings 108] [--out results/bench_report]

1. Report: a sweep of --runs run directories from scripts/synth_sweep.py (made once under --sweep, kept
   for the next call), then `python -m warmup_lab.report` over it in a child process: its wall time, CPU
   time and peak resident memory (the child's own rusage). Targets: <= 60 s, <= 2 GB.
2. Search: the real max_stable_lr sweeper under Hydra's basic launcher on a toy app (stable iff
   lr <= its setting's threshold, no training), --probes-settings settings x 2 seeds, about 1,000 probes.
   The sweeper prints its own time per round (judging the new probes, tables, files); with judged
   probes cached it follows the round's new probes, not all probes so far.
Writes OUT/bench.json, OUT/README.md and OUT/sweeper_rounds.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

APP = '''
from pathlib import Path
import hydra
from hydra.core.hydra_config import HydraConfig
from warmup_lab import runs
from warmup_lab.summary import write_summary

@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg):
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    status = runs.COMPLETED if cfg.optimizer.lr <= cfg.threshold else runs.DIVERGED
    write_summary(run_dir, {"status": status, "target_lr": cfg.optimizer.lr, "seed": cfg.seed,
                            "init_loss": 2.0, "final_train_loss": 0.5 if status == runs.COMPLETED else 9.0})
    return 0.0

if __name__ == "__main__":
    main()
'''
CONFIG = '''
hydra: {sweep: {dir: sweep, subdir: "${hydra.job.override_dirname}"}, job_logging: {root: {level: WARN}},
        hydra_logging: {root: {level: WARN}}}
seed: 0
threshold: 0.01
optimizer: {lr: 0.001}
'''
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def _child(cmd: list[str], cwd: Path) -> dict[str, float | int | str]:
    """Run `cmd`; its wall time, CPU time and peak RSS from its own rusage (wait4), and its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"bench_report: {' '.join(cmd)} exited {proc.returncode}:\n{out[-3000:]}")
    return {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_rss_mb": usage.ru_maxrss / 1024, "output": out}


def bench_report(sweep: Path, n_runs: int) -> dict:
    import synth_sweep

    made = None
    if not (sweep.is_dir() and sum(1 for _ in sweep.iterdir()) >= n_runs):
        start = time.perf_counter()
        synth_sweep.generate(sweep, n_runs, steps=120)
        made = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as out:
        run = _child([sys.executable, "-m", "warmup_lab.report", str(sweep), "--out", out], REPO)
        files = sorted(p.name for p in Path(out).iterdir())
    run.pop("output")
    return {"runs": n_runs, "steps_per_run": 120, "generate_s": made, **run, "files": files,
            "targets": {"wall_s": 60, "peak_rss_mb": 2048}}


def bench_search(n_settings: int) -> dict:
    thresholds = ",".join(f"{0.002 * 1.05 ** i:.6g}" for i in range(n_settings))
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp)
        (app / "app.py").write_text(APP)
        (app / "config.yaml").write_text(CONFIG)
        cmd = [sys.executable, "app.py", "-m", "hydra/sweeper=max_stable_lr", f"threshold={thresholds}",
               "hydra.sweeper.seeds=[0,1]", "hydra.sweeper.start_lr=0.01", "hydra.sweeper.resolution=1.4142135623730951",
               "hydra.sweeper.criteria=[plain]"]
        run = _child(cmd, app)
        report = json.loads((app / "sweep" / "search.json").read_text())
    out = run.pop("output")
    probes = [int(n) for n in re.findall(r"round \d+: (\d+) probes", out)]
    own = [float(s) for s in re.findall(r"round \d+ bookkeeping ([0-9.]+) s", out)]
    total = sum(len(seed["probes"]) for s in report["settings"] for seed in s["seeds"])
    return {"settings": n_settings, "seeds": 2, "probes": total, "rounds": report["rounds"],
            "probes_per_round": probes, "bookkeeping_s_per_round": own, "bookkeeping_s": sum(own), **run}


def figure(search: dict, path: Path):
    """Two panels over the probes so far: the sweeper's own time in each round (top), and each round's new
    probes as a bar spanning them (bottom); every axis labelled, no legend over the data. Returns the
    (closed) figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sys.path.insert(0, str(REPO / "src"))
    from warmup_lab.figstyle import DPI

    probes = np.array(search["probes_per_round"])
    own = np.array(search["bookkeeping_s_per_round"])
    ends = np.cumsum(probes)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(6.0, 5.0), sharex=True, height_ratios=[1.4, 1.0])
    ax.plot(ends, own, "o-", color="tab:blue", clip_on=False)
    for k, (x, y) in enumerate(zip(ends, own)):
        ax.annotate(f"round {k + 1}", (x, y), textcoords="offset points", xytext=(0, 7), ha="center", fontsize=7)
    ax.set_ylabel("sweeper's own time\nin the round (s)")
    ax.set_ylim(0, max(own.max(), 1e-9) * 1.25)
    ax.grid(alpha=0.3)
    bx.bar(ends - probes, probes, width=probes, align="edge", color="0.75", edgecolor="white")
    bx.set_xlabel("probes so far (end of round)")
    bx.set_ylabel("new probes\nin the round")
    bx.set_xlim(0, ends[-1] * 1.03 if len(ends) else 1)
    bx.grid(axis="y", alpha=0.3)
    ax.set_title(f"max_stable_lr sweeper: {search['probes']} probes in {search['rounds']} rounds "
                 f"({search['settings']} settings x {search['seeds']} seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return fig


def readme(result: dict, command: str) -> str:
    r, s = result["report"], result["search"]
    rows = "\n".join(f"| {i + 1} | {n} | {t:.3f} |" for i, (n, t) in
                     enumerate(zip(s["probes_per_round"], s["bookkeeping_s_per_round"])))
    return f"""# Report and search at scale

Made by `{command}` on {result['machine']} (load average at the start {result['load']:.1f}).

## Report over {r['runs']:,} runs

| measure | value | target |
|---|---|---|
| wall time of `python -m warmup_lab.report` | {r['wall_s']:.1f} s | <= {r['targets']['wall_s']} s |
| CPU time (user + system) | {r['cpu_s']:.1f} s | |
| peak resident memory | {r['peak_rss_mb']:.0f} MB | <= {r['targets']['peak_rss_mb']} MB |

On a machine shared with other work, wall time is CPU time stretched by the load (a load average of L on
C cores leaves the report about C/L of them); on an idle machine the wall time is about the CPU time.

The sweep: {r['runs']:,} run directories of {r['steps_per_run']} steps from `scripts/synth_sweep.py` (the
trainer's own writers; 10 warmup settings x 20 LRs x 50 seeds). Files written: {', '.join(r['files'])}.

## Search: {s['probes']} probes in {s['rounds']} rounds

The sweeper's own time (judging new probes, eta_max tables, search.json and CSVs) per round, from its
`round k bookkeeping` lines; {s['settings']} settings x {s['seeds']} seeds of a toy app (no training), Hydra's
basic launcher. Total own time {s['bookkeeping_s']:.2f} s of {s['wall_s']:.1f} s wall.

| round | new probes | own time (s) |
|---|---|---|
{rows}

![sweeper rounds](sweeper_rounds.png)
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--sweep", type=Path, default=Path(tempfile.gettempdir()) / "warmup-lab-bench" / "sweep10k")
    p.add_argument("--probes-settings", type=int, default=108)
    p.add_argument("--out", type=Path, default=REPO / "results" / "bench_report")
    p.add_argument("--redraw", action="store_true", help="only redraw sweeper_rounds.png from --out's bench.json")
    args = p.parse_args(argv)
    if args.redraw:
        figure(json.loads((args.out / "bench.json").read_text())["search"], args.out / "sweeper_rounds.png")
        print(f"redrew {args.out / 'sweeper_rounds.png'}")
        return 0
    load = os.getloadavg()[0]
    result = {"machine": f"{os.cpu_count()} CPUs", "load": load,
              "report": bench_report(args.sweep, args.runs), "search": bench_search(args.probes_settings)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    figure(result["search"], args.out / "sweeper_rounds.png")
    command = "python scripts/bench_report.py " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "README.md").write_text(readme(result, command.strip()))
    r = result["report"]
    print(f"report over {r['runs']} runs: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU, "
          f"{r['peak_rss_mb']:.0f} MB peak; search: {result['search']['probes']} probes, "
          f"own time {result['search']['bookkeeping_s']:.2f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
