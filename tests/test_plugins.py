"""Plug-ins: a user's task (task=custom task._target_=...) and model (model=custom model._target_=...).

The examples in examples/ run as a user would run them; every way a plug-in can be wrong is one line
naming the key, the value and the fix, with nothing written.
"""

from __future__ import annotations

import math
import textwrap

import pytest
import torch

from conftest import FAST, REPO_ROOT, make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.errors import ConfigError
from warmup_lab.summary import read_summary
from warmup_lab.job import train

EXAMPLES = REPO_ROOT / "examples"
MIXER = ["task=digits", "model=custom", "model._target_=mixer.MLPMixer", "+model.dim=16", "+model.depth=1"]
GRU = ["task=custom", "task._target_=gru_charlm.build_task", "task.name=gru_charlm", "+task.hidden=32"]

# Each bad plug-in, as a user might write it, next to a good one; the module is importable via sys.path.
BAD = textwrap.dedent('''
    import torch
    from torch import nn
    from warmup_lab.tasks import Task

    NOT_CALLABLE = 3

    def _task(model=None, batch=None, loss=None):
        model = model or nn.Linear(4, 2)
        x, y = torch.ones(8, 4), torch.zeros(8, dtype=torch.long)
        return Task(name="bad", kind="image", model=model, batch=batch or (lambda t: (x, y)),
                    loss=loss or (lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1])),
                    evaluate=lambda m: {"eval_loss": 0.0}, batch_size=8, chance_acc=0.5)

    def good(cfg, device):
        return _task()

    def returns_dict(cfg, device):
        return {"model": nn.Linear(4, 2)}

    def raises(cfg, device):
        raise KeyError("vocab")

    def vector_loss(cfg, device):
        return _task(loss=lambda m, b: nn.functional.cross_entropy(m(b[0]), b[1], reduction="none"))

    def nan_loss(cfg, device):
        return _task(loss=lambda m, b: m(b[0]).sum() * float("nan"))

    def on_meta(cfg, device):
        return _task(model=nn.Linear(4, 2, device="meta"))

    def unseeded_batches(cfg, device):
        return _task(batch=lambda t: (torch.randn(8, 4), torch.zeros(8, dtype=torch.long)))

    def not_a_module(**sizes):
        return "a model"

    class FlatNet(nn.Module):  # a model plug-in with the wrong output shape for a classifier
        def __init__(self, in_channels, image_size, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], num_classes)

        def forward(self, x):
            return self.fc(x.flatten(1)).unsqueeze(1)

    class ThreeClasses(nn.Module):  # a classifier head sized by hand, not by the num_classes it is given
        def __init__(self, in_channels, image_size, num_classes):
            super().__init__()
            self.fc = nn.Linear(in_channels * image_size[0] * image_size[1], 3)

        def forward(self, x):
            return self.fc(x.flatten(1))

    class LastToken(nn.Module):  # a sequence model returning the logits of the last position only
        def __init__(self, vocab_size, seq_len):
            super().__init__()
            self.emb = nn.Embedding(vocab_size, vocab_size)

        def forward(self, x):
            return self.emb(x)[:, -1]
''')
BROKEN_IMPORT = "import torch\nraise RuntimeError('half-written module')\n"


@pytest.fixture
def plugin_path(tmp_path_factory, monkeypatch):
    folder = tmp_path_factory.getbasetemp() / "user_plugins"
    if not folder.exists():
        folder.mkdir()
        (folder / "bad_plugins.py").write_text(BAD)
        (folder / "broken_plugin.py").write_text(BROKEN_IMPORT)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return folder


def test_the_mixer_example_trains_on_digits_with_the_data_sizes_passed_in(plugin_path, tmp_path):
    summary = train(make_cfg([*MIXER, *FAST, "train.steps=40", "train.batch_size=32", "optimizer=adamw",
                              "optimizer.lr=1e-2"]), tmp_path / "run")
    assert summary["status"] in runs.FINISHED_STATUSES and summary["steps_run"] == 40
    assert summary["model"] == "mixer.MLPMixer" and summary["task"] == "digits"
    assert summary["final_train_loss"] < summary["init_loss"]


def test_the_gru_example_trains_as_a_task_plugin_with_its_own_data(plugin_path, tmp_path):
    summary = train(make_cfg([*GRU, *FAST, "train.steps=12", "optimizer=adamw", "optimizer.lr=1e-2"]),
                    tmp_path / "run")
    assert summary["status"] in runs.FINISHED_STATUSES and summary["steps_run"] == 12
    assert summary["task"] == "gru_charlm" and summary["model"] == "gru_charlm"
    assert summary["final_train_loss"] < summary["init_loss"] and summary["final_eval_ppl"] > 1


def test_a_model_plugin_is_seeded_and_bit_exact_on_rerun(plugin_path, tmp_path):
    cfg = make_cfg([*MIXER, *FAST, "optimizer=sgd", "optimizer.lr=0.1", "seed=3"])
    a, b = train(cfg, tmp_path / "a"), train(cfg, tmp_path / "b")
    assert a["final_train_loss"] == b["final_train_loss"]
    other = train(make_cfg([*MIXER, *FAST, "optimizer=sgd", "optimizer.lr=0.1", "seed=4"]), tmp_path / "c")
    assert other["init_loss"] != a["init_loss"]


def test_the_check_leaves_batchnorm_statistics_and_the_rng_untouched(plugin_path, tmp_path):
    """A model plug-in's run equals the same model built in: the pre-flight loss moved nothing."""
    from warmup_lab.plugins import check_task
    from warmup_lab.tasks import build_task

    cfg = make_cfg(["task=digits", *FAST])
    task = build_task(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    rng = torch.get_rng_state()
    check_task(task, "model._target_", "x.Y", torch.device("cpu"))
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("overrides, match", [
    (["task._target_=no_such_module.build"], r"task._target_='no_such_module.build' is invalid: module "
                                             r"'no_such_module' not found: put its folder on sys.path"),
    (["task._target_=broken_plugin.build"], r"importing broken_plugin raised RuntimeError: half-written module"),
    (["task._target_=bad_plugins.nope"], r"bad_plugins has no attribute 'nope'"),
    (["task._target_=bad_plugins.NOT_CALLABLE"], r"'bad_plugins.NOT_CALLABLE' is invalid: is a int, not callable"),
    (["task._target_=build"], r"a dotted path 'module.attr'"),
    (["task._target_=bad_plugins.returns_dict"], r"returned a dict, not a warmup_lab.tasks.Task"),
    (["task._target_=bad_plugins.raises"], r"raises\(DictConfig, device\(type='cpu'\)\) raised KeyError: 'vocab'"),
    (["task._target_=bad_plugins.vector_loss"], r"returned a torch.float32 tensor of shape \(8,\) with grad: it "
                                                r"must return the mean loss as a scalar"),
    (["task._target_=bad_plugins.nan_loss"], r"= nan at initialisation: it must be finite"),
    (["task._target_=bad_plugins.on_meta"], r"parameter weight is on meta, not on the run's device cpu"),
    (["task._target_=bad_plugins.unseeded_batches"], r"batch\(0\) returned different data when called twice"),
    ([], r"task._target_=None is invalid: task=custom needs task._target_="),
])
def test_a_bad_task_plugin_is_one_line_naming_key_value_and_fix_and_writes_nothing(plugin_path, tmp_path,
                                                                                     overrides, match):
    root = tmp_path / "runs"
    cfg = make_cfg(["task=custom", *overrides, *FAST, f"runs_root={root}"])
    with pytest.raises(ConfigError, match=match) as err:
        train(cfg)
    assert "\n" not in str(err.value)
    assert not root.exists()


@pytest.mark.parametrize("overrides, match", [
    (["model._target_=bad_plugins.FlatNet"], r"model._target_='bad_plugins.FlatNet' is invalid: returned logits of "
                                             r"shape \[8, 1, 10\]; expected \[8, 10\] \(\[batch, num_classes\]\): "
                                             r"size its output by the num_classes=10 it is given$"),
    (["model._target_=bad_plugins.ThreeClasses"], r"returned logits of shape \[8, 3\]; expected \[8, 10\] "
                                                  r"\(\[batch, num_classes\]\)"),
    (["model._target_=bad_plugins.FlatNet", "+model.num_classes=3"], r"model.num_classes=3 is invalid: set by the data"),
    (["model._target_=bad_plugins.not_a_module"], r"returned a str, not a torch.nn.Module"),
    (["model._target_=mixer.MLPMixer", "+model.patch=3"], r"MLPMixer\(in_channels=1, .*patch=3\) raised ValueError"),
    ([], r"model._target_=None is invalid: model=custom needs model._target_=my_pkg.MyNet"),
])
def test_a_bad_model_plugin_is_one_line_and_writes_nothing(plugin_path, tmp_path, overrides, match):
    root = tmp_path / "runs"
    cfg = make_cfg(["task=digits", "model=custom", *overrides, *FAST, f"runs_root={root}"])
    with pytest.raises(ConfigError, match=match) as err:
        train(cfg)
    assert "\n" not in str(err.value) and ".:" not in str(err.value)
    assert not root.exists()


def test_a_sequence_model_with_the_wrong_logits_shape_names_both_shapes(plugin_path, tmp_path):
    root = tmp_path / "runs"
    cfg = make_cfg(["task=modadd", "model=custom", "model._target_=bad_plugins.LastToken", *FAST, f"runs_root={root}"])
    with pytest.raises(ConfigError, match=r"model._target_='bad_plugins.LastToken' is invalid: returned logits of "
                                          r"shape \[8, \d+\]; expected \[8, \d+, \d+\] "
                                          r"\(\[batch, seq_len, vocab_size\]\): size its output by the vocab_size="):
        train(cfg)
    assert not root.exists()


@pytest.mark.slow
def test_both_examples_run_from_the_command_line_as_examples_readme_says(tmp_path):
    """The commands of examples/README.md, with the examples folder on PYTHONPATH, under a joblib launcher."""
    env = {"PYTHONPATH": f"{EXAMPLES}:{REPO_ROOT / 'src'}"}
    for args in (MIXER, GRU):
        proc = run_cli("warmup_lab", ["train", "-m", *args, *FAST, "seed=0,1", f"runs_root={tmp_path / 'runs'}",
                                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], cwd=tmp_path,
                       env_extra=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [read_summary(d) for d in runs.find_run_dirs([tmp_path / "runs"])]
    assert sorted((s["task"], s["seed"]) for s in summaries) == [("digits", 0), ("digits", 1),
                                                                  ("gru_charlm", 0), ("gru_charlm", 1)]


@pytest.mark.slow
def test_a_bad_plugin_on_the_command_line_prints_one_line_and_exits_2(tmp_path):
    proc = run_cli("warmup_lab", ["train", "task=custom", "task._target_=no_such_module.build"], cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "task._target_='no_such_module.build'" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "radam", "gi_adam"])
def test_a_model_plugin_trains_with_every_optimizer_and_the_sharpness_monitor(plugin_path, tmp_path, optimizer):
    cfg = make_cfg([*MIXER, *FAST, f"optimizer={optimizer}", "schedule=untuned_linear_cosine"
                    if optimizer != "sgd" else "schedule=wsd", "sharpness.every=3", "sharpness.iters=3"])
    summary = train(cfg, tmp_path / "run")
    assert summary["status"] in runs.FINISHED_STATUSES and summary["optimizer"] == optimizer
    assert len(summary["sharpness"]) >= 2 and all(math.isfinite(r["sharpness"]) for r in summary["sharpness"])


def test_a_task_plugins_runs_make_a_report(plugin_path, tmp_path):
    from warmup_lab.report import build_report

    for lr in ("3e-3", "3e-1"):
        train(make_cfg([*GRU, *FAST, "optimizer=adamw", f"optimizer.lr={lr}"]), tmp_path / "runs" / lr)
    out = build_report([tmp_path / "runs"], tmp_path / "report")
    text = (out / "report.md").read_text()
    assert "gru_charlm" in text and list(out.glob("*.png"))
