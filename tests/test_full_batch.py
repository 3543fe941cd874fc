"""Full-batch GD, the MSE loss, and LRs in units of the initial sharpness, against closed forms."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from conftest import make_cfg, run_cli
from warmup_lab import runs
from warmup_lab.data import FullBatch
from warmup_lab.errors import ConfigError
from warmup_lab.models import MLP
from warmup_lab.sharpness import initial_sharpness, lr_from_sharpness_units, resolve_lr_units
from warmup_lab.tasks.base import Task
from warmup_lab.tasks.image import make_loss, per_sample_loss
from warmup_lab.job import train

GD = ["experiment=mechanisms/catapult", "data.subset=100", "model.width=16", "train.steps=20", "sharpness.every=0",
      "train.progress=false", "hydra/launcher=basic"]


def losses(run_dir) -> list[float]:
    return [float(r["loss"]) for r in csv.DictReader((run_dir / "metrics.csv").open())]


def linear_task(n: int = 40, d: int = 5, k: int = 3, seed: int = 0) -> tuple[Task, torch.Tensor]:
    """f(x) = W x with the task's MSE: loss = 0.5 mean_i ||W x_i - onehot(y_i)||^2, whose Hessian in W is
    I_k (x) X^T X / n, so its top eigenvalue is that of X^T X / n."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    y = torch.randint(0, k, (n,), generator=g)
    model = nn.Linear(d, k, bias=False).double()
    batches = FullBatch(x, y)
    task = Task("linear", "image", model, batches, make_loss("mse"), lambda m: {}, n, 1 / k)
    return task, torch.linalg.eigvalsh(x.T @ x / n).max()


def test_full_batch_gd_is_deterministic_and_every_batch_is_the_whole_set(tmp_path):
    cfg = make_cfg(GD + ["optimizer.lr_in_sharpness_units=1.0"])
    a = train(cfg, tmp_path / "a")
    b = train(cfg, tmp_path / "b")
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    assert a["task_info"]["lambda0"] == b["task_info"]["lambda0"]
    assert a["task_info"]["full_batch"] and a["batch_size"] == 100 == a["task_info"]["n_train"]
    # GD below the stability edge on a smooth loss: every step lowers the loss.
    assert all(y < x for x, y in zip(losses(tmp_path / "a"), losses(tmp_path / "a")[1:]))


def test_lambda0_of_a_linear_model_with_mse_is_the_top_eigenvalue_of_the_input_covariance():
    task, expected = linear_task()
    params = list(task.model.parameters())
    assert initial_sharpness(task, params, iters=200) == pytest.approx(float(expected), rel=1e-5)


def test_lr_in_sharpness_units_resolves_to_c_over_lambda0_and_leaves_the_given_config_alone():
    task, expected = linear_task()
    cfg = OmegaConf.create({"optimizer": {"lr": 0.1, "lr_in_sharpness_units": 1.5}, "sharpness": {"every": 0}})
    resolved, info = resolve_lr_units(cfg, task)
    assert resolved.optimizer.lr == pytest.approx(1.5 / float(expected), rel=1e-5)
    assert info["eta"] == resolved.optimizer.lr and info["lambda0"] == pytest.approx(float(expected), rel=1e-5)
    assert cfg.optimizer.lr == 0.1
    off = OmegaConf.create({"optimizer": {"lr": 0.1, "lr_in_sharpness_units": None}, "sharpness": {"every": 0}})
    assert resolve_lr_units(off, task) == (off, {})


@pytest.mark.parametrize("c, converges", [(1.9, True), (2.1, False)])
def test_gd_on_the_quadratic_is_stable_exactly_below_c_equal_2(c, converges):
    """The MSE of a linear model is a quadratic: GD at eta = c / lambda0 converges iff c < 2."""
    task, lam = linear_task()
    eta = lr_from_sharpness_units(c, float(lam))
    opt = torch.optim.SGD(task.model.parameters(), lr=eta)
    first = None
    for step in range(400):
        loss = task.loss(task.model, task.batch(step))
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (loss.item() < first) == converges


def test_the_trainer_runs_at_eta_and_records_eta_and_lambda0(tmp_path):
    cfg = make_cfg(GD + ["optimizer.lr_in_sharpness_units=2.5", "sharpness.every=10"])
    summary = train(cfg, tmp_path)
    assert summary["config_hash"] == runs.config_hash(cfg)  # the requested config's (the run dir's name), not eta's
    info = summary["task_info"]
    assert info["eta"] == pytest.approx(2.5 / info["lambda0"]) and info["lr_in_sharpness_units"] == 2.5
    assert summary["target_lr"] == pytest.approx(info["eta"]) and summary["optimizer"] == "sgd"
    lrs = [float(r["lr"]) for r in csv.DictReader((tmp_path / "metrics.csv").open())]
    assert lrs == pytest.approx([info["eta"]] * 20)
    rows = list(csv.DictReader((tmp_path / "sharpness.csv").open()))
    assert [int(r["step"]) for r in rows] == [10, 20]
    assert all(float(r["two_over_lr"]) == pytest.approx(2 / info["eta"]) for r in rows)


def test_mse_is_half_the_squared_error_summed_over_classes_averaged_over_samples():
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0]])
    y = torch.tensor([1, 0])
    expected = torch.tensor([0.5 * 1.0, 0.5 * (0.0 + 4.0 + 0.0)])
    assert torch.equal(per_sample_loss("mse")(logits, y), expected)
    model = nn.Identity()
    assert make_loss("mse")(model, (logits, y)).item() == pytest.approx(expected.mean().item())


def test_mlp_shapes_and_init_scale():
    torch.manual_seed(0)
    for act, gain in (("tanh", 1.0), ("relu", math.sqrt(2))):
        net = MLP(64, 10, width=512, depth=2, activation=act)
        assert net(torch.randn(7, 1, 8, 8)).shape == (7, 10)
        w = net.hidden[2].weight
        assert w.std().item() == pytest.approx(gain / math.sqrt(512), rel=0.05)
        assert net.readout.weight.std().item() == pytest.approx(1 / math.sqrt(512), rel=0.05)


@pytest.mark.slow
def test_bad_loss_or_sharpness_units_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError, match="task.loss"):
        train(make_cfg(GD + ["task.loss=hinge"]), tmp_path / "a")
    with pytest.raises(ConfigError, match="lr_in_sharpness_units"):
        train(make_cfg(GD + ["optimizer.lr_in_sharpness_units=-1"]), tmp_path / "b")
    out = run_cli("warmup_lab.train", GD + ["data.subset=5000", f"out={tmp_path / 'c'}"], cwd=tmp_path)
    assert out.returncode != 0
    assert "data.subset" in out.stderr and len(out.stderr.strip().splitlines()) == 1
