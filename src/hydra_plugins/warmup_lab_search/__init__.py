"""Hydra plugin `hydra/sweeper=max_stable_lr`: the maximum-stable-LR search as a Sweeper.

Hydra finds it by scanning the `hydra_plugins` namespace package; `sweeper.py` registers its
config in Hydra's ConfigStore (group `hydra/sweeper`, name `max_stable_lr`), so any Hydra app in
this environment can select it, not only `warmup_lab.train`.
"""
