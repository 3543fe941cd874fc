"""Hydra plugin `hydra/sweeper=grid`: Hydra's basic grid sweeper, validating a covering set of jobs.

See sweeper.py. Hydra finds it by scanning the `hydra_plugins` namespace package.
"""
