"""scripts/bench_report.py's figure: every axis labelled, nothing drawn over the data."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_report.py"


def test_the_sweeper_rounds_figure_labels_every_axis_and_has_no_legend_over_the_data(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_report", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    search = {"settings": 108, "seeds": 2, "probes": 1112, "rounds": 7,
              "probes_per_round": [216, 216, 216, 216, 158, 74, 16],
              "bookkeeping_s_per_round": [1.12, 1.266, 1.064, 1.078, 0.826, 0.449, 0.231]}
    fig = mod.figure(search, tmp_path / "sweeper_rounds.png")
    assert (tmp_path / "sweeper_rounds.png").stat().st_size > 10_000
    top, bottom = fig.axes
    assert top.get_ylabel() and bottom.get_ylabel() and bottom.get_xlabel() == "probes so far (end of round)"
    assert top.get_legend() is None and bottom.get_legend() is None and not fig.legends
    # the bars span each round's probes, end to end, at the heights of the new probes
    bars = bottom.patches
    assert [round(b.get_height()) for b in bars] == search["probes_per_round"]
    assert [round(b.get_x() + b.get_width()) for b in bars] == [216, 432, 648, 864, 1022, 1096, 1112]
    line = top.get_lines()[0]
    assert list(line.get_ydata()) == search["bookkeeping_s_per_round"]
    assert max(search["bookkeeping_s_per_round"]) < top.get_ylim()[1]
