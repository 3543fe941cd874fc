"""Shared test helpers: compose the real Hydra config, and run the real CLIs."""

from __future__ import annotations

import _posixsubprocess
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from warmup_lab.paths import CONF_DIR, REPO_ROOT

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)  # tests are small; two test processes share this 2-core machine

# Small enough for seconds on a CPU, big enough to exercise every code path.
FAST = [
    "train.steps=6",
    "train.batch_size=8",
    "train.eval_every=3",
    "train.eval_batches=1",
    "train.checkpoint_every=0",
    "train.progress=false",
    "logger=none",
]


def make_cfg(overrides: list[str], config_name: str = "train") -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def run_cli(module: str, args: list[str], cwd: Path, timeout: float = 300, env_extra: dict | None = None,
            **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1",
           "HYDRA_FULL_ERROR": "0", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, **kw)


@pytest.fixture(autouse=True)
def _interpreters_only_in_slow_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts a Python interpreter (run_cli, a sweep, a launcher's workers) must be marked
    `slow`, so that `make test-fast` stays a quick loop: forgetting the mark fails the test."""
    if request.node.get_closest_marker("slow"):
        return

    def guard(real):
        def fork_exec(args, executable_list, *rest):
            if any(os.path.basename(os.fsdecode(e)).startswith("python") for e in executable_list):
                raise AssertionError(f"{request.node.nodeid} starts a Python interpreter: mark it @pytest.mark.slow")
            return real(args, executable_list, *rest)
        return fork_exec

    monkeypatch.setattr(subprocess, "_fork_exec", guard(subprocess._fork_exec))  # type: ignore[attr-defined]
    monkeypatch.setattr(_posixsubprocess, "fork_exec", guard(_posixsubprocess.fork_exec))  # multiprocessing, loky


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    return path


@pytest.fixture
def immutable_dir(tmp_path):
    """A directory even root cannot write into (chattr +i), standing in for a read-only runs_root."""
    path = tmp_path / "readonly"
    path.mkdir()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported here")
    yield path
    subprocess.run(["chattr", "-i", str(path)], check=True)


__all__ = ["FAST", "make_cfg", "run_cli", "REPO_ROOT"]
