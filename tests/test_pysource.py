"""The stdlib-source corpus: a deterministic selection of real text, its provenance, and the charlm wiring."""

from pathlib import Path

import pytest
import torch

from conftest import FAST, make_cfg
from warmup_lab.data import pysource
from warmup_lab.errors import ConfigError, DataMissingError
from warmup_lab.tasks import build_task
from warmup_lab.job import train


def write_lib(root: Path) -> Path:
    root.mkdir()
    (root / "b_mod.py").write_text("def b():\n    return 2\n")
    (root / "a_mod.py").write_text("def a():\n    return 1\n")
    (root / "c_mod.py").write_text("x = 3\n")
    (root / "pkg").mkdir()
    (root / "pkg" / "inner.py").write_text("not included\n")
    return root


def test_files_are_joined_in_name_order_and_cut_at_max_chars(tmp_path):
    root = write_lib(tmp_path / "lib")
    text, info = pysource.stdlib_text(30, root)
    full = "def a():\n    return 1\n" + "def b():\n    return 2\n"
    assert text == full[:30]
    assert info["files"] == 2 and info["first_file"] == "a_mod.py" and info["last_file"] == "b_mod.py"
    assert info["n_chars"] == 30 and len(info["sha256"]) == 16
    again, info2 = pysource.stdlib_text(30, root)
    assert again == text and info2 == info


def test_an_empty_library_and_an_unknown_corpus_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataMissingError, match="data.path"):
        pysource.stdlib_text(100, tmp_path / "empty")
    with pytest.raises(ConfigError, match="data.corpus='shakespeare'.*python_stdlib"):
        pysource.corpus_text("shakespeare", 100)


def test_the_running_interpreters_stdlib_is_real_python_source():
    text, info = pysource.stdlib_text(20_000)
    assert info["n_chars"] == 20_000 and info["files"] >= 1
    assert "def " in text and "import " in text
    compile(pysource.stdlib_files()[0].read_text(encoding="utf-8"), "first", "exec")


def test_charlm_on_the_stdlib_corpus_trains_and_records_its_source(tmp_path):
    cfg = make_cfg(["task=charlm", "data.corpus=python_stdlib", "data.max_chars=20000", "data.block_size=16",
                    *FAST, f"out={tmp_path / 'run'}"])
    task = build_task(cfg, torch.device("cpu"))
    assert task.info["corpus"] == "python_stdlib" and task.info["n_chars"] == 20_000
    x, y = task.batch(0)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the next characters
    summary = train(cfg)
    assert summary["status"] in ("completed", "failed_to_train") and summary["task_info"]["sha256"] == task.info["sha256"]


def test_the_text_is_read_once_per_process_and_each_run_gets_its_own_provenance():
    from warmup_lab.data.pysource import stdlib_text

    (text1, info1), (text2, info2) = stdlib_text(5000), stdlib_text(5000)
    assert text1 is text2 and info1 == info2 and info1 is not info2
    info1["n_eval"] = 1  # a run adds to its task info; the next run's provenance is untouched
    assert "n_eval" not in stdlib_text(5000)[1]
