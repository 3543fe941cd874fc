"""A wheel, installed non-editable into a fresh virtual environment offline, works from any directory.

The wheel is built from a copy of the source (nothing written into the checkout); the new environment
sees this project's third-party packages through a .pth line (its editable warmup_lab is not activated:
nested .pth files are not processed), and the test checks that warmup_lab is imported from the wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def _env() -> dict:
    """No PYTHONPATH: a source tree on it would be imported (and seen by pip as installed) instead of the wheel."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}


def _sh(cmd: list, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """bin/ of a fresh venv with the warmup-lab wheel installed (--no-deps --no-index)."""
    base = tmp_path_factory.mktemp("install")
    src = base / "source"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _sh([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", base / "dist",
         "."], cwd=src)
    (wheel,) = (base / "dist").glob("warmup_lab-*.whl")
    venv = base / "venv"
    _sh([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], cwd=base)
    py = venv / "bin" / "python"
    site = _sh([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base).stdout.strip()
    _sh([py, "-m", "pip", "install", "--no-deps", "--no-index", wheel], cwd=base)
    # After the install: pip would otherwise see the project's own warmup_lab metadata and skip the wheel.
    Path(site, "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, hydra, ...
    return venv / "bin"


def test_the_wheel_is_what_gets_imported_and_ships_configs_and_the_sweeper(installed, tmp_path):
    code = ("import warmup_lab, hydra_plugins.warmup_lab_search as s; from warmup_lab.paths import CONF_DIR; "
            "print(warmup_lab.__file__); print(s.__file__); print(CONF_DIR / 'train.yaml')")
    out = _sh([installed / "python", "-c", code], cwd=tmp_path).stdout.split()
    venv = str(installed.parent)
    assert all(path.startswith(venv) for path in out), out
    assert Path(out[2]).is_file()


def test_warmup_lab_help_and_train_from_an_unrelated_directory(installed, tmp_path):
    helped = _sh([installed / "warmup-lab", "--help"], cwd=tmp_path).stdout
    for command in ("train", "sweep", "search", "report", "lr-curve", "lr-find", "advise"):
        assert f"  {command} " in helped
    _sh([installed / "warmup-lab", "train", "task=digits", "train.steps=4", "train.batch_size=8",
         "train.eval_batches=1", "train.progress=false", "logger=none"], cwd=tmp_path)
    (summary,) = tmp_path.glob("runs/*/summary.json")
    assert json.loads(summary.read_text())["steps_run"] == 4


def test_the_installed_search_runs_its_sweeper_plugin(installed, tmp_path):
    _sh([installed / "warmup-lab", "search", "task=modadd", "train.steps=4", "train.batch_size=8",
         "train.eval_batches=1", "train.progress=false", "logger=none", "hydra.sweeper.seeds=[0]",
         "hydra.sweeper.max_rounds=1", "hydra.sweeper.out_dir=out"], cwd=tmp_path)
    assert json.loads((tmp_path / "out" / "search.json").read_text())


def test_the_installed_command_finds_a_plugin_in_the_current_directory(installed, tmp_path):
    shutil.copy(REPO_ROOT / "examples" / "mixer.py", tmp_path / "mixer.py")
    _sh([installed / "warmup-lab", "train", "task=digits", "model=custom", "model._target_=mixer.MLPMixer",
         "+model.depth=1", "train.steps=4", "train.batch_size=8", "train.eval_batches=1", "train.progress=false",
         "logger=none"], cwd=tmp_path)
    (summary,) = tmp_path.glob("runs/*/summary.json")
    assert json.loads(summary.read_text())["model"] == "mixer.MLPMixer"
