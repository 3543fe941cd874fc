"""Generated sequence tasks: modular addition, copy, reverse.

Every example is (input tokens, targets) with targets = IGNORE except where the loss is taken, so one
loss and one evaluation serve every task. Data are tensors on the run's device. A training batch is a
pure function of (seed, step): resuming at step t gives exactly the batches an unbroken run sees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import torch

from warmup_lab.data.seeds import derive_seed, generator
from warmup_lab.errors import require

IGNORE = -100  # cross_entropy's ignore_index: positions without a target
Batch = tuple[torch.Tensor, torch.Tensor]  # (inputs (B, T) long, targets (B, T) long)


@dataclass
class SequenceData:
    """What the sequence Task needs from a data set."""

    name: str
    vocab_size: int                   # model vocabulary, specials included
    seq_len: int                      # input length T
    n_classes: int                    # answer classes (chance accuracy = 1 / n_classes)
    batch: Callable[[int], Batch]     # step -> training batch
    test: Batch                       # the fixed held-out set
    n_train: int | None               # None: a fresh stream per step
    info: dict[str, Any] = field(default_factory=dict)


def modadd(p: int, train_frac: float, data_seed: int, seed: int, batch_size: int,
           device: torch.device) -> SequenceData:
    """(a + b) mod p as `a b =` -> c; a fixed split of all p^2 pairs, per-epoch shuffles of the train part."""
    require(p >= 2, "data.p", p, "an integer >= 2")
    n_all = p * p
    n_train = int(train_frac * n_all)
    require(0 < n_train < n_all, "data.train_frac", train_frac, f"a fraction leaving both splits non-empty (p={p})")
    pairs = torch.randperm(n_all, generator=torch.Generator().manual_seed(derive_seed("modadd-split", data_seed)))
    a, b = pairs // p, pairs % p
    eq = torch.full_like(a, p)  # token p is "="
    x = torch.stack([a, b, eq], 1).to(device)
    y = torch.full_like(x, IGNORE)
    y[:, 2] = ((a + b) % p).to(device)  # the answer is read at the "=" position
    x_train, y_train, test = x[:n_train], y[:n_train], (x[n_train:], y[n_train:])

    @lru_cache(maxsize=4)
    def order(epoch: int) -> torch.Tensor:
        return torch.randperm(n_train, generator=generator(device, "modadd-epoch", seed, epoch), device=device)

    def batch(step: int) -> Batch:
        pos = torch.arange(step * batch_size, (step + 1) * batch_size)  # positions in the epoch stream
        epochs = pos // n_train
        idx = torch.empty(batch_size, dtype=torch.long, device=device)
        for e in epochs.unique().tolist():  # a batch may straddle an epoch boundary
            sel = epochs == e
            idx[sel.to(device)] = order(e)[(pos[sel] % n_train).to(device)]
        return x_train[idx], y_train[idx]

    return SequenceData("modadd", p + 1, 3, p, batch, test, n_train, {"p": p})


def copy_reverse(name: str, length: int, vocab: int, n_test: int, data_seed: int, seed: int,
                 batch_size: int, device: torch.device) -> SequenceData:
    """`s SEP t` with t = s (copy) or reversed(s) (reverse); the loss is on t only."""
    require(name in ("copy", "reverse"), "data.name", name, "copy or reverse")
    require(length >= 1, "data.length", length, "an integer >= 1")
    require(vocab >= 2, "data.vocab", vocab, "an integer >= 2")
    require(n_test >= 1, "data.n_test", n_test, "an integer >= 1")

    def make(n: int, g: torch.Generator) -> Batch:
        s = torch.randint(0, vocab, (n, length), generator=g, device=g.device)
        t = s.flip(1) if name == "reverse" else s
        sep = torch.full((n, 1), vocab, dtype=torch.long, device=g.device)  # token `vocab` separates
        seq = torch.cat([s, sep, t], 1)
        y = torch.full((n, 2 * length), IGNORE, dtype=torch.long, device=g.device)
        y[:, length:] = t  # input position i predicts token i + 1: SEP predicts t[0]
        return seq[:, :-1], y

    # The test set comes from CPU so it is the same on every device; train batches are drawn on the device.
    test = tuple(v.to(device) for v in make(n_test, torch.Generator().manual_seed(derive_seed(name, "test", data_seed))))

    def batch(step: int) -> Batch:
        return make(batch_size, generator(device, name, "train", seed, step))

    # Targets are uniform i.i.d. symbols, so the best constant predictor (uniform over the symbols) has loss
    # ln(vocab): the baseline a model must beat to have learned anything (criterion learned_<f>).
    return SequenceData(name, vocab + 1, 2 * length, vocab, batch, test, None,  # type: ignore[arg-type]
                        {"length": length, "symbols": vocab, "constant_predictor_loss": math.log(vocab)})
