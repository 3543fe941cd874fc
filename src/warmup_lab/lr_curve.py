"""`python -m warmup_lab.lr_curve schedule=<preset> <overrides>`: the LR of every update, as CSV and PNG.

Writes lr_curve.csv (step,lr; exactly train.steps rows, steps 0..T-1) and lr_curve.png into `out`
(default outputs/lr_curve/<warmup>-<decay>-<time>), and prints where. Bad config: one line on stderr,
exit 2, and no folder made.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from warmup_lab.cli import check_argv
from warmup_lab.errors import exit_on_user_error
from warmup_lab.paths import CONF_DIR
from warmup_lab.schedules import Schedule, schedule_from_cfg


TITLE_WIDTH = 70  # characters per title line at fontsize 9 on a 7-inch figure


def title_for(sched: Schedule, width: int = TITLE_WIDTH) -> str:
    """The schedule in three short lines (name; warmup; decay and LRs), each wrapped at `width` characters."""
    from warmup_lab.figstyle import wrap

    d = sched.describe()
    head = d["name"] or f"{d['warmup']}-{d['decay']}"
    extra = f", beta2={d['beta2']:g}" if "beta2" in d else ""
    lines = [head, f"{d['warmup']} warmup, T_w={d['warmup_steps']}, step0 {d['step0']}{extra}",
             f"{d['decay']} decay ({d['compose']}), T={d['total_steps']}, peak={d['peak_lr']:.3g}, "
             f"init={d['init_lr']:.3g}, min={d['min_lr']:.3g}"]
    return wrap("\n".join(lines), width)


WARMUP_END = {"color": "tab:red", "ls": "--", "lw": 0.8}  # the dashed line at the end of warmup, in every figure


def plot_curve(ax: Any, sched: Schedule, lrs: list[float], small: bool = False) -> None:
    """Draw one curve on `ax`, the warmup end marked (a dashed red line, labelled for a legend)."""
    from matplotlib import ticker

    ax.plot(range(len(lrs)), lrs, lw=1.2 if small else 1.6, color="tab:blue", label="learning rate")
    tw = sched.warmup_steps
    if 0 < tw < len(lrs):
        ax.axvline(tw, **WARMUP_END, label=f"end of warmup, step T_w={tw}")
    ax.set_xlim(0, max(len(lrs) - 1, 1))
    ax.set_ylim(bottom=0)
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))  # 0.0005, not 5 with a 1e-4 offset
    ax.grid(alpha=0.3)


def curve_figure(sched: Schedule, lrs: list[float]) -> Any:
    """The single-schedule figure, laid out: the title wrapped, the legend below the axes (where it covers
    no part of the curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.4))
    plot_curve(ax, sched, lrs)
    ax.set_xlabel("step t (optimizer update)")
    ax.set_ylabel("learning rate")
    ax.set_title(title_for(sched), fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def write_curve(sched: Schedule, out: Path, dpi: int | None = None) -> tuple[Path, Path]:
    """lr_curve.csv and lr_curve.png (at `dpi`, never below figstyle.DPI)."""
    import matplotlib.pyplot as plt

    from warmup_lab.figstyle import DPI

    out.mkdir(parents=True, exist_ok=True)
    lrs = sched.curve()
    csv_path, png_path = out / "lr_curve.csv", out / "lr_curve.png"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "lr"])
        w.writerows((t, repr(lr)) for t, lr in enumerate(lrs))
    fig = curve_figure(sched, lrs)
    fig.savefig(png_path, dpi=max(dpi or DPI, DPI))
    plt.close(fig)
    return csv_path, png_path


def default_out(sched: Schedule) -> Path:
    """outputs/lr_curve/<warmup>-<decay>-<time to the microsecond>: a new folder per call."""
    from datetime import datetime

    d = sched.describe()
    return Path("outputs", "lr_curve", f"{d['warmup']}-{d['decay']}-{datetime.now():%Y%m%d-%H%M%S-%f}")


@exit_on_user_error
def run(cfg: DictConfig) -> Path:
    sched = schedule_from_cfg(cfg)  # validates: a refused config returns before any folder is made
    out = Path(str(cfg.out)) if cfg.get("out") else default_out(sched)
    csv_path, png_path = write_curve(sched, out)
    print(f"wrote {csv_path} and {png_path}", flush=True)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="lr_curve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_argv()  # one line for an unknown group option, before Hydra's multi-line one
    main()
