#!/usr/bin/env python
"""`make sweep [EXPERIMENT=name]`: a thin wrapper of `warmup-lab sweep` (warmup_lab/sweep.py), run from the
repository root so `sweeps/` and `results/` land in the checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.chdir(REPO)

from warmup_lab.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
