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
