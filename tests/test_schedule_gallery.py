"""scripts/schedule_gallery.py: the overview shows each preset's warmup enlarged, and every line it draws is explained."""

import importlib.util
from pathlib import Path

import matplotlib.colors
import pytest

from conftest import make_cfg
from warmup_lab.schedules import schedule_from_cfg

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "schedule_gallery.py"


@pytest.fixture(scope="module")
def gallery():
    spec = importlib.util.spec_from_file_location("schedule_gallery", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_each_preset_has_its_warmup_enlarged_and_the_red_line_is_in_the_legend(gallery, tmp_path):
    names = ["linear_cosine", "geometric_cosine", "none_constant", "untuned_linear_cosine", "wsd"]
    scheds = {n: schedule_from_cfg(make_cfg([f"schedule={n}", "train.steps=1000", "optimizer.lr=0.001",
                                             "optimizer.betas=[0.9,0.99]"], config_name="lr_curve")) for n in names}
    fig = gallery.overview(scheds, 1000, 1e-3, tmp_path / "overview.png")
    assert (tmp_path / "overview.png").stat().st_size > 50_000
    zooms = {ax.get_gid().split(":", 1)[1]: ax for ax in fig.axes if str(ax.get_gid()).startswith("zoom:")}
    assert set(zooms) == set(names)  # one warmup zoom per preset
    for name, s in scheds.items():
        lo, hi = zooms[name].get_xlim()
        want = 2 * s.warmup_steps if s.warmup_steps else 100
        assert (lo, hi) == (0, want), name
        # the zoom shows the warmup over most of its width (the whole run's panel gives it a tenth)
        if s.warmup_steps:
            assert s.warmup_steps / (hi - lo) == pytest.approx(0.5)
    red = matplotlib.colors.to_rgba("tab:red")
    reds = [ln for ax in fig.axes for ln in ax.get_lines() if matplotlib.colors.to_rgba(ln.get_color()) == red]
    assert reds and all(ln.get_linestyle() == "--" for ln in reds)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "end of warmup (step T_w)" in legend
    assert all(t.get_fontsize() >= 7 for ax in fig.axes for t in ax.get_xticklabels())
