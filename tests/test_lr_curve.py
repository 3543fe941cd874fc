"""The LR-curve command: CSV rows equal to transformers' own schedule; bad input = one line, exit 2."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import transformers

from conftest import make_cfg, run_cli
from warmup_lab.errors import EXIT_CONFIG
from warmup_lab.lr_curve import run


def _read(path):
    with open(path) as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["step", "lr"]
    return [(int(s), float(v)) for s, v in rows[1:]]


@pytest.mark.slow
def test_cli_matches_hf_cosine_with_warmup(tmp_path):
    out = tmp_path / "curve"
    res = run_cli("warmup_lab.lr_curve", ["schedule=linear_cosine", "schedule.warmup_steps=100", "train.steps=1000",
                                          "optimizer.lr=0.001", f"out={out}"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert str(out) in res.stdout
    rows = _read(out / "lr_curve.csv")
    assert [s for s, _ in rows] == list(range(1000))
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.001)
    hf = transformers.get_cosine_schedule_with_warmup(opt, 100, 1000)
    for step, lr in rows:
        want = opt.param_groups[0]["lr"]
        assert math.isclose(lr, want, rel_tol=1e-9, abs_tol=1e-18), (step, lr, want)
        opt.step()
        hf.step()
    assert (out / "lr_curve.png").stat().st_size > 5_000


@pytest.mark.slow
@pytest.mark.parametrize("args,field", [
    (["schedule.warmup=linearr"], "schedule.warmup"),
    (["schedule.warmup_steps=5000"], "schedule.warmup_steps"),
    (["optimizer.lr=-0.1"], "optimizer.lr"),
    (["schedule=untuned_linear_cosine", "optimizer=sgd"], "optimizer.betas"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, args, field):
    res = run_cli("warmup_lab.lr_curve", [*args, f"out={tmp_path / 'o'}"], cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == EXIT_CONFIG and len(lines) == 1, res.stderr
    assert lines[0].startswith(f"error: {field}=") and "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "lr_curve.csv").exists()


@pytest.mark.slow
def test_cli_without_out_refuses_leaving_nothing_and_writes_under_outputs(tmp_path):
    """The default folder is made after the config is validated, as train's is: a refusal leaves the cwd empty."""
    bad = run_cli("warmup_lab.lr_curve", ["optimizer.lr=-1"], cwd=tmp_path)
    assert bad.returncode == EXIT_CONFIG and list(tmp_path.iterdir()) == [], bad.stderr
    good = run_cli("warmup_lab.lr_curve", ["schedule=wsd", "train.steps=20"], cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    (made,) = (tmp_path / "outputs" / "lr_curve").iterdir()
    assert made.name.startswith("linear-wsd-") and str(made.relative_to(tmp_path)) in good.stdout
    assert sorted(p.name for p in made.iterdir()) == ["lr_curve.csv", "lr_curve.png"]
    assert len(_read(made / "lr_curve.csv")) == 20


@pytest.mark.parametrize("args,field", [
    (["schedule.decay=cosinus"], "schedule.decay"),
    (["schedule.warmup_steps=10", "schedule.warmup_ratio=0.1"], "schedule.warmup_steps"),
    (["schedule.warmup_ratio=1.5"], "schedule.warmup_ratio"),
    (["schedule.min_lr=0.01"], "schedule.min_lr"),
    (["schedule=geometric_cosine", "schedule.init_lr_ratio=0"], "schedule.init_lr"),
])
def test_run_bad_input_in_process(tmp_path, capsys, args, field):
    cfg = make_cfg([*args, f"out={tmp_path}"], config_name="lr_curve")
    with pytest.raises(SystemExit) as ex:
        run(cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert ex.value.code == EXIT_CONFIG and len(err) == 1 and err[0].startswith(f"error: {field}=")


def test_run_multiplier_preset_writes_T_rows(tmp_path):
    cfg = make_cfg(["schedule=radam_cosine", "train.steps=50", f"out={tmp_path}"], config_name="lr_curve")
    run(cfg)
    rows = _read(tmp_path / "lr_curve.csv")
    assert len(rows) == 50 and round(rows[0][1] / 1e-3, 3) == 0.017  # RAdamWarmup at t=0, beta2=0.999


def test_the_figure_title_is_wrapped_inside_it_its_legend_off_the_curve_at_150_dpi(tmp_path):
    import matplotlib.image
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from warmup_lab.lr_curve import TITLE_WIDTH, curve_figure, title_for, write_curve
    from warmup_lab.schedules import schedule_from_cfg

    cfg = make_cfg(["schedule=untuned_exponential_cosine", "train.steps=1000", "optimizer.betas=[0.9,0.99]",
                    f"out={tmp_path}"], config_name="lr_curve")
    sched = schedule_from_cfg(cfg)
    title = title_for(sched)
    assert "beta2=0.99" in title and max(len(line) for line in title.splitlines()) <= TITLE_WIDTH
    lrs = sched.curve()
    fig = curve_figure(sched, lrs)
    ax = fig.axes[0]
    renderer = FigureCanvasAgg(fig).get_renderer()
    box, legend = fig.bbox, ax.get_legend()
    for artist in (ax.title, legend):
        ext = artist.get_window_extent(renderer)
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, artist
    assert [t.get_text() for t in legend.get_texts()] == ["learning rate", f"end of warmup, step T_w={sched.warmup_steps}"]
    points = ax.transData.transform(np.column_stack([np.arange(len(lrs)), lrs]))
    ext = legend.get_window_extent(renderer)
    inside = ((points[:, 0] >= ext.x0) & (points[:, 0] <= ext.x1) & (points[:, 1] >= ext.y0) & (points[:, 1] <= ext.y1))
    assert not inside.any()  # the legend covers no part of the curve
    _, png = write_curve(sched, tmp_path / "curve", dpi=70)  # a smaller dpi asked for is raised to 150
    height, width = matplotlib.image.imread(png).shape[:2]
    assert width >= 7 * 150 - 1
