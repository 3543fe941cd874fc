"""CIFAR-10 from its python-format batches, read by our own reader.

torchvision's CIFAR10 class checks fixed md5 sums, so it refuses any other copy of the files (a
small set written by a test, a mirror); it is used only to download and unpack the archive, then
our reader loads `cifar-10-batches-py/` (pickled dicts: b"data" uint8 N x 3072 as R, G, B planes of
32 x 32, and b"labels"). Offline and without the files, the run stops with one message that says
where to put them.
"""

from __future__ import annotations

import pickle
import socket
import threading
from pathlib import Path

import numpy as np
import torch

from warmup_lab.data.images import ImageData, normalise
from warmup_lab.errors import DataMissingError, require

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
URL_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
HOST = "www.cs.toronto.edu"
PROBE_TIMEOUT_S = 5.0      # bound on the reachability check (DNS included), so offline CI fails fast
DOWNLOAD_TIMEOUT_S = 60.0  # socket timeout while torchvision downloads


def has_cifar10(root: str | Path) -> bool:
    folder = Path(root) / FOLDER
    return all((folder / name).is_file() for name in TRAIN_FILES + TEST_FILES)


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch -> (uint8 N x 3 x 32 x 32, int64 N)."""
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    data = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    labels = np.asarray(d.get(b"labels", d.get(b"fine_labels")), dtype=np.int64)
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data, labels


def read_cifar10(root: str | Path) -> dict[str, np.ndarray | list[str]]:
    """All five training batches and the test batch under root/cifar-10-batches-py."""
    folder = Path(root) / FOLDER
    xs, ys = zip(*(read_batch(folder / name) for name in TRAIN_FILES))
    x_test, y_test = read_batch(folder / TEST_FILES[0])
    classes = [f"class_{i}" for i in range(10)]
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            classes = [c.decode() if isinstance(c, bytes) else str(c)
                       for c in pickle.load(f, encoding="bytes").get(b"label_names", classes)]
    return {"x_train": np.concatenate(xs), "y_train": np.concatenate(ys), "x_test": x_test, "y_test": y_test,
            "classes": classes}


def _reachable(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Can we open a TCP connection to host? Run in a thread so a hanging DNS lookup is bounded too."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _download(root: Path) -> str | None:
    """Download and unpack with torchvision; returns why it failed, or None."""
    if not _reachable(HOST):
        return f"{HOST} is not reachable (offline?)"
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
    except Exception as err:  # network, disk, checksum: all end in the same instruction
        return f"download failed: {type(err).__name__}: {err}"
    finally:
        socket.setdefaulttimeout(old)
    return None


def missing_message(root: Path, why: str | None) -> str:
    return (f"CIFAR-10 not found: put the folder {FOLDER}/ (with data_batch_1..5 and test_batch) in "
            f"{root.resolve()} ; get cifar-10-python.tar.gz from {URL_PAGE} and unpack it there, "
            f"or set data.root=<dir holding {FOLDER}/>, or work offline with task=digits or task=shapes"
            + (f" ({why})" if why else ""))


def load_cifar10(root: str | Path, download: bool = True, subset: int | None = None,
                 device: torch.device | str = "cpu") -> ImageData:
    """CIFAR-10 normalised with its usual per-channel mean/std, optionally the first `subset` of a
    fixed permutation of the training set (seed 0: the same subset for every run seed)."""
    root = Path(root).expanduser()
    why = None
    if not has_cifar10(root):
        why = _download(root) if download else "data.download=false"
        if not has_cifar10(root):
            raise DataMissingError(missing_message(root, why))
    raw = read_cifar10(root)
    x_train = torch.from_numpy(raw["x_train"])
    y_train = torch.from_numpy(raw["y_train"])
    if subset is not None:
        require(1 <= int(subset) <= len(x_train), "data.subset", subset,
                f"null or an integer between 1 and {len(x_train)}")
        keep = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(0))[: int(subset)].sort().values
        x_train, y_train = x_train[keep], y_train[keep]
    x_train = x_train.to(device).float().div_(255)
    x_test = torch.from_numpy(raw["x_test"]).to(device).float().div_(255)
    x_train, x_test = normalise(x_train, x_test, MEAN, STD)
    return ImageData("cifar10", x_train, y_train.to(device), x_test, torch.from_numpy(raw["y_test"]).to(device),
                     10, {"classes": raw["classes"], "root": str(root)})
