"""Seeds for per-step data streams: batches are a pure function of (seed, step), on the run's device."""

from __future__ import annotations

import hashlib
from typing import Any

import torch


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from a tuple such as ("order", seed, epoch): distinct tuples, unrelated streams."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generator(device: torch.device | str, *parts: Any) -> torch.Generator:
    """A generator on `device` seeded from `parts`, so per-step batches are drawn there without host copies."""
    return torch.Generator(device=device).manual_seed(derive_seed(*parts))
