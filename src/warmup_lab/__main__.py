"""`python -m warmup_lab <command> ...`: the same as the `warmup-lab` console script."""

import sys

from warmup_lab.cli import main

sys.exit(main())
