"""Hydra configs of warmup-lab (YAML only); importable so `pkg://warmup_lab.conf` resolves."""
