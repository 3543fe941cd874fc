"""The contract between a task and the trainer.

The trainer knows nothing about which task (or schedule) it runs: it asks a Task for the batch of
step t, the loss on a batch, and an evaluation. Batches are a pure function of (seed, step), so a
resumed run sees exactly the batches an uninterrupted run would, with no data-loader state to save.
Data lives in memory on the run's device (airbench style): no worker processes, no per-step host copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

Batch = Any  # a task's own batch type (e.g. a tuple of tensors already on the device)


@dataclass
class Task:
    name: str                                              # e.g. "digits", "modadd"
    kind: str                                              # "image" | "sequence" | "lm"
    model: nn.Module
    batch: Callable[[int], Batch]                          # step -> training batch (deterministic)
    loss: Callable[[nn.Module, Batch], torch.Tensor]       # mean training loss (scalar, with grad)
    evaluate: Callable[[nn.Module], dict[str, float]]      # eval_loss, eval_acc (+ extras such as
                                                           # eval_exact_match, eval_ppl); model in eval mode
    batch_size: int                                        # samples per training batch (for samples/s)
    chance_acc: float | None                               # accuracy of a uniform guess (None: no accuracy)
    info: dict[str, Any] = field(default_factory=dict)     # sizes, vocab, etc., recorded in the summary
    # The training loss of the best input-blind predictor (a classifier: the entropy of the class prior,
    # ln C when balanced; a char-LM: the text's unigram entropy). Optional: a criterion that requires
    # learning (stability `learned_<f>`) asks for a final training loss below a fraction of it.
    baseline_loss: float | None = None

    def __post_init__(self) -> None:
        if self.baseline_loss is not None:  # the summary records task.info: the criterion reads it there
            self.info["baseline_loss"] = float(self.baseline_loss)


def entropy(labels: torch.Tensor) -> float:
    """Entropy in nats of the empirical distribution of integer `labels`: the loss of predicting their
    frequencies whatever the input."""
    counts = torch.bincount(labels.reshape(-1).long().cpu()).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())
