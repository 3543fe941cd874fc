"""`hydra/sweeper=grid`: Hydra's basic sweeper (same grid, same job order), with a cheaper check up front.

Before launching a batch, BasicSweeper composes the config of every job in it, in the launching
process, to catch a composition error before any run starts; each worker then composes its job again.
A composition of the default study's config takes about 0.08 s here, so a 160-job grid spent ~13 s
composing before any worker started, one core busy and the other idle. A composition error comes from an override
value: a group option that does not exist, a key a config does not have, a value of the wrong type.
`validate: covering` (the default here) composes a set of jobs in which every override value of the
batch appears at least once: the same errors are caught before any run, except one that only a
combination of two values produces, which then fails its own job. `validate: all` is Hydra's check.
"""

# No `from __future__ import annotations`: Hydra's plugin scanner executes this module before it is
# in sys.modules, and dataclasses then cannot resolve string annotations.
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

VALIDATE = ("covering", "all")


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.warmup_lab_grid.sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None
    validate: str = "covering"  # covering | all (Hydra's: compose every job before launching)


ConfigStore.instance().store(group="hydra/sweeper", name="grid", node=GridSweeperConf, provider="warmup_lab")


def covering(batch: Sequence[Sequence[str]]) -> List[Sequence[str]]:
    """Jobs of `batch`, in order, such that every override string of the batch is in one of them."""
    seen: set = set()
    chosen = []
    for job in batch:
        if any(o not in seen for o in job):
            chosen.append(job)
            seen.update(job)
    return chosen


class GridSweeper(BasicSweeper):
    def __init__(self, max_batch_size: Optional[int] = None, params: Optional[Dict[str, str]] = None,
                 validate: str = "covering") -> None:
        if validate not in VALIDATE:
            raise ValueError(f"hydra.sweeper.validate={validate!r}: one of {', '.join(VALIDATE)} "
                             "(covering: every override value composed once before the runs; all: every job)")
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.validate = validate

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        super().validate_batch_is_legal(batch if self.validate == "all" else covering(batch))
