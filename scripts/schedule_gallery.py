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
from warmup_lab.lr_curve import plot_curve, write_curve  # noqa: E402
from warmup_lab.paths import CONF_DIR  # noqa: E402
from warmup_lab.schedules import schedule_from_cfg  # noqa: E402


def presets() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "schedule").glob("*.yaml") if not p.stem.startswith("_"))


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
            "each panel's inset zooms on steps 0 to 2 T_w, where the warmup shapes differ.", "",
            "![overview](overview.png)", "", "| preset | warmup | T_w | step0 | decay | peak | what it is |",
            "|---|---|---|---|---|---|---|"]
    for name, s in scheds.items():
        d = out / name
        csv_path, png = write_curve(s, d, dpi=70)
        png.rename(out / f"{name}.png")
        csv_path.unlink()
        d.rmdir()
        rows.append(f"| [{name}]({name}.png) | {s.warmup} | {s.warmup_steps} | {s.step0} | {s.decay} | "
                    f"{s.peak_lr:.3g} | {comment(name)} |")
    cols = 4
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.2 * nrows), squeeze=False)
    for ax, (name, s) in zip(axes.flat, scheds.items()):
        curve = s.curve()
        plot_curve(ax, s, curve, small=True)
        ax.set_title(f"{name} (T_w={s.warmup_steps})", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.yaxis.get_offset_text().set_fontsize(6)
        if s.warmup_steps:  # warmup is a few % of T: a zoom on its first 2 T_w steps, where the shapes differ
            zoom = ax.inset_axes((0.52, 0.1, 0.44, 0.42))
            end = min(len(curve), 2 * s.warmup_steps + 1)
            zoom.plot(range(end), curve[:end], lw=1, color="tab:blue")
            zoom.axvline(s.warmup_steps, color="0.5", lw=0.6, ls=":")
            zoom.set_xlim(0, end - 1)
            zoom.set_title(f"zoom: steps 0-{end - 1}", fontsize=5, pad=1)
            zoom.tick_params(labelsize=4.5, length=1.5, pad=1)
            zoom.yaxis.get_offset_text().set_fontsize(4.5)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(f"warmup-lab schedule presets, T={args.steps}, lr={args.lr:g}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "overview.png", dpi=110)
    plt.close(fig)
    (out / "index.md").write_text("\n".join(rows) + "\n")
    print(f"wrote {len(names)} presets, overview.png and index.md to {out}")


if __name__ == "__main__":
    main()
