"""`python -m warmup_lab.lr_curve schedule=<preset> <overrides>`: the LR of every update, as CSV and PNG.

Writes lr_curve.csv (step,lr; exactly train.steps rows, steps 0..T-1) and lr_curve.png into `out`
(or Hydra's run directory), and prints where. Bad config: one line on stderr, exit 2.
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


def title_for(sched: Schedule) -> str:
    d = sched.describe()
    head = d["name"] or f"{d['warmup']}-{d['decay']}"
    extra = f", beta2={d['beta2']:g}" if "beta2" in d else ""
    return (f"{head}: {d['warmup']} warmup, T_w={d['warmup_steps']} (step0 {d['step0']}{extra})\n"
            f"{d['decay']} decay ({d['compose']}), T={d['total_steps']}, peak={d['peak_lr']:.3g}, "
            f"init={d['init_lr']:.3g}, min={d['min_lr']:.3g}")


def plot_curve(ax: Any, sched: Schedule, lrs: list[float], small: bool = False) -> None:
    """Draw one curve on `ax`, the warmup end marked."""
    ax.plot(range(len(lrs)), lrs, lw=1.2 if small else 1.6, color="tab:blue")
    tw = sched.warmup_steps
    if 0 < tw < len(lrs):
        ax.axvline(tw, color="tab:red", ls="--", lw=0.8, label=f"warmup end T_w={tw}")
        if not small:
            ax.legend(loc="upper right", fontsize=8)
    ax.set_xlim(0, max(len(lrs) - 1, 1))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def write_curve(sched: Schedule, out: Path, dpi: int = 100) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    lrs = sched.curve()
    csv_path, png_path = out / "lr_curve.csv", out / "lr_curve.png"
    with open(csv_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "lr"])
        w.writerows((t, repr(lr)) for t, lr in enumerate(lrs))
    fig, ax = plt.subplots(figsize=(7, 4))
    plot_curve(ax, sched, lrs)
    ax.set_xlabel("step t (optimizer update)")
    ax.set_ylabel("learning rate")
    ax.set_title(title_for(sched), fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=dpi)
    plt.close(fig)
    return csv_path, png_path


@exit_on_user_error
def run(cfg: DictConfig) -> Path:
    sched = schedule_from_cfg(cfg)
    if cfg.get("out"):
        out = Path(str(cfg.out))
    else:
        from hydra.core.hydra_config import HydraConfig

        out = Path(HydraConfig.get().runtime.output_dir)
    csv_path, png_path = write_curve(sched, out)
    print(f"wrote {csv_path} and {png_path}", flush=True)
    return out


@hydra.main(config_path=str(CONF_DIR), config_name="lr_curve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    check_argv()  # one line for an unknown group option, before Hydra's multi-line one
    main()
