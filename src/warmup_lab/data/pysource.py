"""Real text that every machine has offline: the Python standard library's own source files.

`data.corpus=python_stdlib` trains the character-level LM on the top-level `*.py` files of the running
interpreter's standard library (`sysconfig.get_paths()['stdlib']`), sorted by name and concatenated
until `max_chars` characters. The same Python minor version gives (almost always) the same text; the
run's task info records the directory, the number of files, the characters and the sha256 of the text,
so two runs on different text are visible as such.
"""

from __future__ import annotations

import hashlib
import sys
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Any

from warmup_lab.errors import ConfigError, DataMissingError, require

CORPORA = ("python_stdlib",)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path | None = None) -> list[Path]:
    """The top-level `*.py` files of the standard library, in name order (subpackages and tests excluded)."""
    return sorted((root or stdlib_dir()).glob("*.py"), key=lambda p: p.name)


def stdlib_text(max_chars: int, root: Path | None = None) -> tuple[str, dict[str, Any]]:
    """The first `max_chars` characters of the stdlib files joined in name order, and what they are.

    Read once per process and kept (the interpreter's own files do not change while it runs); the
    provenance is a fresh copy each time, since a run adds to its task info."""
    text, info = _stdlib_text(max_chars, root)
    return text, dict(info)


@lru_cache(maxsize=2)
def _stdlib_text(max_chars: int, root: Path | None) -> tuple[str, dict[str, Any]]:
    require(max_chars >= 1, "data.max_chars", max_chars, "an integer >= 1")
    root = root or stdlib_dir()
    files = stdlib_files(root)
    if not files:
        raise DataMissingError(f"no *.py files under {root}: data.corpus=python_stdlib needs the interpreter's "
                               "standard library sources; use data.path=/path/to/file.txt instead")
    parts, n, used = [], 0, 0
    for f in files:
        if n >= max_chars:
            break
        chunk = f.read_text(encoding="utf-8", errors="replace")
        parts.append(chunk)
        n += len(chunk)
        used += 1
    text = "".join(parts)[:max_chars]
    info = {
        "corpus": "python_stdlib", "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "stdlib": str(root), "files": used, "first_file": files[0].name, "last_file": files[used - 1].name,
        "n_chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16],
    }
    return text, info


def corpus_text(name: str, max_chars: int) -> tuple[str, dict[str, Any]]:
    """The text of a named corpus (`data.corpus`) and its provenance."""
    if name == "python_stdlib":
        return stdlib_text(max_chars)
    raise ConfigError("data.corpus", name, f"one of {', '.join(CORPORA)}, or null with data.path=/path/to/file.txt")
