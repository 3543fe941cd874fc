"""warmup-lab: an empirical harness for learning-rate warmup research."""

__version__ = "0.1.0"
