"""Image tasks: batches as a pure function of (seed, step), augmentation, digits/shapes tasks, configs."""

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from warmup_lab.data import load_image_data
from warmup_lab.data.images import Batches, augment, load_digits, load_shapes
from warmup_lab.errors import ConfigError
from warmup_lab.tasks import build_task
from warmup_lab.paths import CONF_DIR

CONF = CONF_DIR
CPU = torch.device("cpu")


def image_cfg(data: str, seed: int = 0, batch_size: int = 32, eval_batches=None, **data_overrides):
    data_cfg = OmegaConf.merge(OmegaConf.load(CONF / "data" / f"{data}.yaml"), data_overrides)
    return OmegaConf.create({
        "seed": seed, "task": {"name": data, "kind": "image"}, "model": OmegaConf.load(CONF / "model/resnet20.yaml"),
        "data": data_cfg, "train": {"batch_size": batch_size, "eval_batches": eval_batches},
    })


@pytest.fixture(scope="module")
def digits_task():
    return build_task(image_cfg("digits", size=8), CPU)


def test_batches_are_a_pure_function_of_seed_and_step(digits_task):
    x1, y1 = digits_task.batch(7)
    x2, y2 = digits_task.batch(7)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    digits_task.batch(500)                               # another epoch in between changes nothing
    assert torch.equal(digits_task.batch(7)[0], x1)
    assert not torch.equal(digits_task.batch(8)[0], x1)
    fresh = build_task(image_cfg("digits", size=8), CPU)  # a resumed run rebuilds the task
    assert torch.equal(fresh.batch(7)[0], x1)
    other = build_task(image_cfg("digits", seed=1, size=8), CPU)
    assert not torch.equal(other.batch(7)[0], x1)
    assert x1.shape == (32, 1, 8, 8) and y1.dtype == torch.int64


def test_an_epoch_visits_every_sample_at_most_once():
    n, bs = 103, 10
    batches = Batches(torch.arange(n).float(), torch.arange(n), bs, seed=3, augment=False)
    epoch0 = torch.cat([batches(s)[1] for s in range(batches.steps_per_epoch)])
    epoch1 = torch.cat([batches(s)[1] for s in range(10, 20)])
    assert len(epoch0.unique()) == 100 and len(epoch1.unique()) == 100
    assert not torch.equal(epoch0, epoch1)
    with pytest.raises(ConfigError, match="train.batch_size"):
        Batches(torch.zeros(5, 1, 4, 4), torch.zeros(5), 6, seed=0)


def test_augmentation_is_a_crop_or_mirror_and_keeps_labels():
    data = load_shapes(n_train=40, n_test=10, size=16)
    plain = Batches(data.x_train, data.y_train, 8, seed=0, augment=False)
    aug = Batches(data.x_train, data.y_train, 8, seed=0, augment=True, pad=2, flip=True)
    (x0, y0), (x, y) = plain(3), aug(3)
    assert x.shape == x0.shape and torch.equal(y, y0)
    for orig, out in zip(x0, x):                         # each output is one of the 2 x 25 crops
        candidates = [torch.nn.functional.pad(img, (2, 2, 2, 2))[:, dy:dy + 16, dx:dx + 16]
                      for img in (orig, orig.flip(2)) for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out, c) for c in candidates)
    gen = torch.Generator().manual_seed(0)
    flipped = augment(x0, gen, pad=0, flip=True)
    assert all(torch.equal(a, b) or torch.equal(a, c.flip(2)) for a, b, c in zip(flipped, x0, x0))
    assert not torch.equal(flipped, x0)


def test_digits_task_builds_evaluates_near_chance_and_learns(digits_task):
    task = digits_task
    assert task.kind == "image" and task.chance_acc == pytest.approx(0.1)
    info = task.info
    assert (info["n_train"], info["n_test"], info["channels"], info["num_classes"]) == (1497, 300, 1, 10)
    assert info["image_size"] == [8, 8] and info["flip"] is False and info["pad"] == 1
    assert 250_000 < info["n_params"] < 300_000
    task.model.train()
    before = task.evaluate(task.model)
    assert task.model.training                           # evaluate restores train mode
    assert set(before) == {"eval_loss", "eval_acc"} and abs(before["eval_acc"] - 0.1) < 0.1
    model = build_task(image_cfg("digits", size=8), CPU).model
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(60):
        loss = task.loss(model, task.batch(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert task.evaluate(model)["eval_acc"] > 0.5     # chance is 0.1


def test_model_init_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    a = build_task(image_cfg("shapes", n_train=50, n_test=20), CPU)
    assert torch.equal(torch.get_rng_state(), state)
    b = build_task(image_cfg("shapes", n_train=50, n_test=20), CPU)
    c = build_task(image_cfg("shapes", seed=1, n_train=50, n_test=20), CPU)
    pa, pb, pc = (torch.nn.utils.parameters_to_vector(t.model.parameters()) for t in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_shapes_task_is_deterministic_balanced_and_near_chance_at_init():
    d1, d2 = load_shapes(200, 50, size=16, seed=0), load_shapes(200, 50, size=16, seed=0)
    assert torch.equal(d1.x_train, d2.x_train) and torch.equal(d1.y_test, d2.y_test)
    assert not torch.equal(load_shapes(200, 50, size=16, seed=1).x_train, d1.x_train)
    assert d1.y_train.bincount().min() >= 12 and d1.x_train.shape == (200, 3, 16, 16)
    task = build_task(image_cfg("shapes", n_train=200, n_test=600, eval_batches=1, eval_batch_size=256), CPU)
    assert task.info["n_eval"] == 256 and task.info["channels"] == 3
    for norm_model in (task.model, build_task(OmegaConf.merge(
            image_cfg("shapes", n_train=200, n_test=600), {"model": {"norm": "none"}}), CPU).model):
        result = task.evaluate(norm_model)
        assert abs(result["eval_acc"] - 0.1) < 0.1
    with pytest.raises(ConfigError, match="data.name"):
        build_task(OmegaConf.merge(image_cfg("digits"), {"data": {"name": "mnist"}}), CPU)


def test_digits_split_is_fixed_and_normalised():
    a, b = load_digits(size=16), load_digits(size=16)
    assert torch.equal(a.y_test, b.y_test) and a.x_train.shape == (1497, 1, 16, 16)
    assert abs(a.x_train.mean().item()) < 1e-4 and abs(a.x_train.std().item() - 1) < 1e-3


def _my_conf(tmp_path: Path) -> Path:
    """Only this module's config groups, plus a minimal primary config with train.yaml's group order."""
    for group, names in {"model": ["resnet20", "resnet32", "resnet56"], "data": ["cifar10", "digits", "shapes"],
                         "task": ["cifar10", "digits", "shapes"]}.items():
        (tmp_path / group).mkdir()
        for name in names:
            shutil.copy(CONF / group / f"{name}.yaml", tmp_path / group)
    (tmp_path / "train.yaml").write_text(
        "defaults:\n  - _self_\n  - model: resnet56\n  - data: shapes\n  - task: shapes\n"
        "seed: 0\ntrain:\n  batch_size: 64\n  eval_batches: 8\n")
    return tmp_path


@pytest.mark.parametrize("task", ["digits", "shapes", "cifar10"])
def test_task_configs_compose(tmp_path, task):
    with initialize_config_dir(str(_my_conf(tmp_path)), version_base="1.3"):
        cfg = compose("train", overrides=[f"task={task}"])
        assert (cfg.task.name, cfg.task.kind, cfg.model.name, cfg.data.name) == (task, "image", "resnet20", task)
        cfg = compose("train", overrides=[f"task={task}", "model=resnet32", "model.norm=none"])
        assert (cfg.model.name, cfg.model.depth, cfg.model.norm, cfg.data.name) == ("resnet32", 32, "none", task)
    # only CIFAR-10 is read from disk: its root names its folder; digits and shapes need none
    assert ("root" in cfg.data) == (task == "cifar10")
    if task == "cifar10":
        assert str(cfg.data.root).endswith("/cifar10")


def test_real_train_config_composes_task_digits():
    """The real train.yaml with every group: a missing group is a failure, not a skip."""
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["task=digits", "model=resnet32", "model.norm=none"])
    assert (cfg.model.name, cfg.model.norm, cfg.data.name, cfg.task.kind) == ("resnet32", "none", "digits", "image")
    assert cfg.data.flip is False


def test_pixel_standardisation_uses_training_statistics_and_leaves_constant_pixels_at_zero():
    data = load_image_data(OmegaConf.create({"name": "digits", "size": 8, "subset": 200, "normalise": "pixel"}))
    plain = load_image_data(OmegaConf.create({"name": "digits", "size": 8, "subset": 200}))
    x = data.x_train.flatten(1)
    constant = plain.x_train.flatten(1).std(dim=0) == 0
    assert constant.any() and not constant.all()  # digits' blank border: always the same value
    assert x.mean(dim=0).abs().max() < 1e-4
    assert torch.allclose(x.std(dim=0)[~constant], torch.ones(int((~constant).sum())), atol=1e-4)
    assert x[:, constant].abs().max() < 1e-5  # centred, not divided by a zero std
    # the held-out split goes through the training set's map, not its own statistics
    mean, std = plain.x_train.mean(dim=0), plain.x_train.std(dim=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    assert torch.allclose(data.x_test, (plain.x_test - mean) / std, atol=1e-5)
    assert torch.equal(data.y_train, plain.y_train) and data.info["normalise"] == "pixel"
    with pytest.raises(ConfigError, match="data.normalise"):
        load_image_data(OmegaConf.create({"name": "digits", "size": 8, "normalise": "image"}))


def test_label_noise_replaces_a_fixed_fraction_of_training_labels_the_same_way_every_time():
    cfg = {"name": "digits", "size": 8, "subset": 500}
    clean = load_image_data(OmegaConf.create(cfg))
    a, b = (load_image_data(OmegaConf.create({**cfg, "label_noise": 0.5})) for _ in range(2))
    assert torch.equal(a.y_train, b.y_train)  # a fixed draw: every run seed trains on the same labels
    changed = int((a.y_train != clean.y_train).sum())
    # 250 samples get a uniform random class: about 9/10 of them a different one
    assert 200 <= changed < 250 and a.info["labels_changed"] == changed and a.info["label_noise"] == 0.5
    assert int((a.y_train < 0).sum() + (a.y_train > 9).sum()) == 0
    assert torch.equal(a.x_train, clean.x_train) and torch.equal(a.y_test, clean.y_test)  # inputs, held-out clean
    assert torch.equal(load_image_data(OmegaConf.create({**cfg, "label_noise": 0.0})).y_train, clean.y_train)
    with pytest.raises(ConfigError, match="data.label_noise"):
        load_image_data(OmegaConf.create({**cfg, "label_noise": 1.5}))


def test_data_options_are_declared_keys_that_enter_the_hash_only_when_set():
    from warmup_lab import runs
    from warmup_lab.config_keys import check_keys

    with initialize_config_dir(str(CONF), version_base="1.3"):
        base = compose("train", overrides=["experiment=mechanisms/edge_of_stability"])
        preset = compose("train", overrides=["experiment=mechanisms/progressive_sharpening"])
        other = compose("train", overrides=["experiment=mechanisms/progressive_sharpening", "data.label_noise=0.25"])
    for cfg in (base, preset, other):
        check_keys(cfg)
    assert "label_noise" not in base.data and "normalise" not in base.data  # absent: older hashes stand
    assert (preset.data.normalise, preset.data.label_noise) == ("pixel", 0.5)
    assert len({runs.config_hash(c) for c in (base, preset, other)}) == 3
