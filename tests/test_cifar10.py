"""CIFAR-10: our reader on a small set written in CIFAR-10's own on-disk format; the offline path."""

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from warmup_lab.data import cifar10 as cifar
from warmup_lab.data import load_image_data
from warmup_lab.errors import DataMissingError
from warmup_lab.tasks import build_task
from warmup_lab.paths import CONF_DIR

CONF = CONF_DIR


def write_cifar(root: Path, n_per_batch: int = 12, n_test: int = 20, skip: str | None = None) -> dict:
    """Pickled dicts exactly as in cifar-10-python.tar.gz: b"data" uint8 N x 3072 (R, G, B planes)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        n = n_test if name == "test_batch" else n_per_batch
        d = {b"batch_label": name.encode(), b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"{name}_{i}.png".encode() for i in range(n)]}
        written[name] = d
        if name != skip:
            with open(folder / name, "wb") as f:
                pickle.dump(d, f)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": n_per_batch,
                     b"num_vis": 3072}, f)
    return written


def data_cfg(root: Path, **kw):
    return OmegaConf.merge(OmegaConf.load(CONF / "data/cifar10.yaml"), {"root": str(root), **kw})


def test_reader_layout_normalisation_and_meta(tmp_path):
    written = write_cifar(tmp_path)
    data = load_image_data(data_cfg(tmp_path), "cpu")
    assert data.x_train.shape == (60, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
    assert data.y_train.tolist() == sum((written[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    row = written["data_batch_2"][b"data"][3]            # 13th training image overall
    for c, i, j in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        raw = row[c * 1024 + i * 32 + j] / 255
        assert data.x_train[15, c, i, j].item() == pytest.approx((raw - cifar.MEAN[c]) / cifar.STD[c], abs=1e-5)
    assert data.info["classes"][0] == "airplane" and data.num_classes == 10


def test_subset_is_deterministic_and_the_task_runs(tmp_path):
    write_cifar(tmp_path)
    a = load_image_data(data_cfg(tmp_path, subset=25), "cpu")
    b = load_image_data(data_cfg(tmp_path, subset=25), "cpu")
    full = load_image_data(data_cfg(tmp_path), "cpu")
    assert a.x_train.shape[0] == 25 and torch.equal(a.x_train, b.x_train)
    assert all(any(torch.equal(x, f) for f in full.x_train) for x in a.x_train[:5])
    cfg = OmegaConf.create({"seed": 0, "task": {"name": "cifar10", "kind": "image"},
                            "model": OmegaConf.load(CONF / "model/resnet20.yaml"),
                            "data": data_cfg(tmp_path, subset=40), "train": {"batch_size": 16, "eval_batches": 1}})
    task = build_task(cfg, torch.device("cpu"))
    x, y = task.batch(3)
    assert x.shape == (16, 3, 32, 32) and task.info["pad"] == 4 and task.info["n_train"] == 40
    task.loss(task.model, (x, y)).backward()
    assert set(task.evaluate(task.model)) == {"eval_loss", "eval_acc"}


@pytest.mark.parametrize("download", [True, False])
def test_missing_data_fails_fast_and_says_where_to_put_it(tmp_path, monkeypatch, download):
    # An unresolvable host (RFC 2606 .invalid) makes the download path fail the same way online and offline.
    monkeypatch.setattr(cifar, "HOST", "cifar10-test.invalid")
    root = tmp_path / "nowhere"
    began = time.perf_counter()
    with pytest.raises(DataMissingError) as err:
        load_image_data(data_cfg(root, download=download), "cpu")
    assert time.perf_counter() - began < cifar.PROBE_TIMEOUT_S + 2
    msg = str(err.value)
    assert str(root.resolve()) in msg and "cifar-10-batches-py/" in msg and "cifar-10-python.tar.gz" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in msg and "data.root=" in msg and "task=digits" in msg
    assert "\n" not in msg


def test_an_incomplete_folder_counts_as_missing(tmp_path):
    write_cifar(tmp_path, skip="test_batch")
    assert not cifar.has_cifar10(tmp_path)
    with pytest.raises(DataMissingError, match="cifar-10-batches-py"):
        load_image_data(data_cfg(tmp_path, download=False), "cpu")
