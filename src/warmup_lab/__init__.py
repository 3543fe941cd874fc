"""warmup-lab: an empirical harness for learning-rate warmup research."""

from warmup_lab import resolvers

__version__ = "0.1.0"

resolvers.register()  # the configs' ${hash:}, ${pick:} and ${first:}: every entry point imports the package
