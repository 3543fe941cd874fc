"""warmup-lab: an empirical harness for learning-rate warmup research.

The notebook API (docs/api.md) is imported on first use, so `import warmup_lab` stays cheap (no torch,
pandas or Hydra): run, search, load_runs, load_curves, schedule, get_scheduler, and Task (the plug-in
contract, docs/your-model.md).
"""

from warmup_lab import resolvers

__version__ = "0.1.0"

resolvers.register()  # the configs' ${hash:}, ${pick:} and ${first:}: every entry point imports the package

_LAZY = {"run": "warmup_lab.api", "search": "warmup_lab.api", "SearchResult": "warmup_lab.api",
         "load_runs": "warmup_lab.api", "load_curves": "warmup_lab.api", "schedule": "warmup_lab.api",
         "get_scheduler": "warmup_lab.api", "compose": "warmup_lab.api", "Task": "warmup_lab.tasks.base"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'warmup_lab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = ["__version__", *_LAZY]
