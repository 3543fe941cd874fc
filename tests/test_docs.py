"""The code in docs/ runs as written: docs/api.md's Python blocks in order, in an empty directory."""

from __future__ import annotations

import re

import pytest

from conftest import REPO_ROOT

BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(doc: str) -> list[str]:
    return BLOCK.findall((REPO_ROOT / "docs" / doc).read_text())


@pytest.mark.slow
def test_every_block_of_api_md_runs_in_order(tmp_path, monkeypatch):
    blocks = python_blocks("api.md")
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    assert (tmp_path / "runs" / "lr_grid").is_dir() and (tmp_path / "results" / "digits_eta_max").is_dir()


FILE_BLOCK = re.compile(r"^<!-- file: (\S+) -->\n```python\n(.*?)^```", re.S | re.M)
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
SHORT = ["train.steps=30", "logger=none", "train.progress=false"]  # appended: Hydra's last value wins


def train_commands(doc: str) -> list[list[str]]:
    """The `warmup-lab train ...` commands of a doc's bash blocks, continuation lines joined."""
    commands = []
    for block in BASH_BLOCK.findall(doc):
        for line in block.replace("\\\n", " ").splitlines():
            words = line.split("#")[0].split()
            if words[:2] == ["warmup-lab", "train"]:
                commands.append(words[2:])
    return commands


@pytest.mark.slow
def test_your_model_md_files_and_train_commands_run_from_an_empty_folder(tmp_path):
    from conftest import run_cli
    from warmup_lab import runs
    from warmup_lab.summary import read_summary

    doc = (REPO_ROOT / "docs" / "your-model.md").read_text()
    files = FILE_BLOCK.findall(doc)
    assert [name for name, _ in files] == ["my_model.py", "my_task.py"]
    for name, code in files:
        (tmp_path / name).write_text(code)
    commands = train_commands(doc)
    assert len(commands) == 2
    for args in commands:
        proc = run_cli("warmup_lab", ["train", *args, *SHORT], cwd=tmp_path)  # the folder with the files
        assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [read_summary(d) for d in runs.find_run_dirs([tmp_path / "runs"])]
    assert sorted(s["task"] for s in summaries) == ["digits", "xor"]
    for s in summaries:
        assert s["status"] == "completed" and s["final_train_loss"] < s["init_loss"], s
