"""A GRU character-level language model on a text file, as a warmup-lab task plug-in (model and data).

    warmup-lab train task=custom task._target_=gru_charlm.build_task task.name=gru_charlm \
        +task.text=/path/to/any.txt optimizer=adamw optimizer.lr=3e-3

warmup-lab calls build_task(cfg, device) and trains the Task it returns. Without task.text it reads
Python's own argparse.py source, which every machine has. Batches are a pure function of the step, so a
killed run resumes exactly and every seed sees the same data order.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from warmup_lab.tasks import Task


class CharGRU(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, L] -> logits [B, L, vocab]
        out, _ = self.gru(self.embed(x))
        return self.head(out)


def build_task(cfg, device: torch.device) -> Task:
    opts = cfg.task
    text = Path(opts.get("text") or argparse.__file__).read_text(encoding="utf-8")
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long, device=device)
    split = int(0.9 * len(data))
    train, held_out = data[:split], data[split:]
    block, batch_size, seed = int(opts.get("block", 64)), int(cfg.train.batch_size), int(cfg.seed)

    def windows(source: torch.Tensor, starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx = starts[:, None] + torch.arange(block + 1, device=device)
        rows = source[idx]
        return rows[:, :-1], rows[:, 1:]

    def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)  # pure function of (seed, step)
        starts = torch.randint(0, len(train) - block - 1, (batch_size,), generator=gen).to(device)
        return windows(train, starts)

    def loss(model: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = b
        return F.cross_entropy(model(x).flatten(0, 1), y.flatten())

    eval_x, eval_y = windows(held_out, torch.arange(0, len(held_out) - block - 1, block, device=device))

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        logits = model(eval_x)
        model.train(was_training)
        eval_loss = F.cross_entropy(logits.flatten(0, 1), eval_y.flatten()).item()
        acc = (logits.argmax(-1) == eval_y).float().mean().item()
        return {"eval_loss": eval_loss, "eval_acc": acc, "eval_ppl": math.exp(min(eval_loss, 700.0))}

    model = CharGRU(len(chars), int(opts.get("hidden", 128)), int(opts.get("layers", 1))).to(device)
    return Task(name=str(opts.name), kind="lm", model=model, batch=batch, loss=loss, evaluate=evaluate,
                batch_size=batch_size, chance_acc=1.0 / len(chars),
                info={"vocab_size": len(chars), "n_chars": len(text), "block": block})
