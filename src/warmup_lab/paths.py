"""Where the repository and its Hydra configs are (the package is installed editable from src/)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"

__all__ = ["REPO_ROOT", "CONF_DIR"]
