"""Draw every schedule preset (conf/schedule/*.yaml): one PNG each, an overview grid, and index.md.

    python scripts/schedule_gallery.py --out results/schedules [--steps 1000] [--lr 1e-3] [--beta2 0.99]

beta2 defaults to 0.99 so the untuned/radam warmups (length ~2/(1-beta2)) fit inside 1000 steps.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from warmup_lab.errors import exit_on_user_error  # noqa: E402
from warmup_lab.figstyle import DPI  # noqa: E402
from warmup_lab.lr_curve import WARMUP_END, plot_curve, write_curve  # noqa: E402
from warmup_lab.paths import CONF_DIR  # noqa: E402
from warmup_lab.schedules import schedule_from_cfg  # noqa: E402


def presets() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "schedule").glob("*.yaml") if not p.stem.startswith("_"))


def zoom_end(sched, n_steps: int) -> int:
    """The last step the warmup zoom shows: 2 T_w (the warmup and as much after it), or the first tenth of
    the run when there is no warmup."""
    return min(n_steps - 1, 2 * sched.warmup_steps if sched.warmup_steps else max(n_steps // 10, 1))


def overview(scheds: dict, steps: int, lr: float, path: Path, cols: int = 4):
    """Every preset in a column block: the whole run above, the warmup zoomed below it (steps 0 to 2 T_w,
    shaded in the panel above), the end of warmup a dashed red line in both, explained in the legend.
    Returns the (closed) figure."""
    from matplotlib import ticker
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    nrows = math.ceil(len(scheds) / cols)
    fig = plt.figure(figsize=(3.7 * cols, 4.1 * nrows + 0.9))
    outer = fig.add_gridspec(nrows, cols, hspace=0.42, wspace=0.32)
    plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
    for k, (name, s) in enumerate(scheds.items()):
        r, c = divmod(k, cols)
        pair = outer[r, c].subgridspec(2, 1, height_ratios=[1.25, 1.0], hspace=0.62)
        ax, zoom = fig.add_subplot(pair[0]), fig.add_subplot(pair[1])
        curve = s.curve()
        end = zoom_end(s, len(curve))
        plot_curve(ax, s, curve, small=True)
        ax.axvspan(0, end, color="0.85", lw=0, zorder=0)
        ax.set_title(f"{name} (T_w={s.warmup_steps})", fontsize=9)
        zoom.plot(range(end + 1), curve[:end + 1], lw=1.4, color="tab:blue")
        if 0 < s.warmup_steps <= end:
            zoom.axvline(s.warmup_steps, **WARMUP_END)
        zoom.set_xlim(0, end)
        zoom.set_ylim(bottom=0)
        zoom.set_facecolor("0.97")
        zoom.set_title(f"warmup: steps 0-{end}" if s.warmup_steps else f"no warmup: steps 0-{end}", fontsize=8)
        zoom.set_gid(f"zoom:{name}")  # for tests: which preset this zoom belongs to
        for a in (ax, zoom):
            a.tick_params(labelsize=7)
            a.yaxis.set_major_formatter(plain)
            a.yaxis.set_major_locator(ticker.MaxNLocator(4, steps=[1, 2, 2.5, 5, 10]))
            a.grid(alpha=0.3)
        if c == 0:
            ax.set_ylabel("learning rate", fontsize=8)
            zoom.set_ylabel("learning rate", fontsize=8)
        zoom.set_xlabel("step", fontsize=8)
    handles = [Line2D([], [], color="tab:blue", lw=1.4, label="learning rate"),
               Line2D([], [], **WARMUP_END, label="end of warmup (step T_w)"),
               Patch(color="0.85", label="steps shown enlarged in the panel below (0 to 2 T_w)")]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.45 / fig.get_figheight()), ncol=3,
               fontsize=9, frameon=False)
    fig.suptitle(f"warmup-lab schedule presets, T={steps}, lr={lr:g}: each run, and its warmup enlarged below it",
                 fontsize=11, y=1 - 0.1 / fig.get_figheight())
    fig.subplots_adjust(left=0.06, right=0.985, bottom=0.04, top=1 - 1.15 / fig.get_figheight())
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return fig


def comment(name: str) -> str:
    first = (CONF_DIR / "schedule" / f"{name}.yaml").read_text().splitlines()[0]
    return first.lstrip("# ").strip()


@exit_on_user_error
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/schedules")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--beta2", type=float, default=0.99)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = presets()
    scheds = {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for name in names:
            cfg = compose("lr_curve", overrides=[f"schedule={name}", f"train.steps={args.steps}",
                                                 f"optimizer.lr={args.lr}", f"optimizer.betas=[0.9,{args.beta2}]"])
            scheds[name] = schedule_from_cfg(cfg)
    rows = ["# Schedule presets", "",
            f"T={args.steps} updates, optimizer.lr={args.lr:g}, beta2={args.beta2:g} (untuned/radam lengths come from "
            "it). Made by `make schedules` (scripts/schedule_gallery.py); reference: docs/schedules.md. In the overview, "
            "the panel under each preset enlarges steps 0 to 2 T_w (shaded above it), where the warmup shapes differ; "
            "the dashed red line is the end of warmup.", "",
            "![overview](overview.png)", "", "| preset | warmup | T_w | step0 | decay | peak | what it is |",
            "|---|---|---|---|---|---|---|"]
    for name, s in scheds.items():
        d = out / name
        csv_path, png = write_curve(s, d)
        png.rename(out / f"{name}.png")
        csv_path.unlink()
        d.rmdir()
        rows.append(f"| [{name}]({name}.png) | {s.warmup} | {s.warmup_steps} | {s.step0} | {s.decay} | "
                    f"{s.peak_lr:.3g} | {comment(name)} |")
    overview(scheds, args.steps, args.lr, out / "overview.png")
    (out / "index.md").write_text("\n".join(rows) + "\n")
    print(f"wrote {len(names)} presets, overview.png and index.md to {out}")


if __name__ == "__main__":
    main()
