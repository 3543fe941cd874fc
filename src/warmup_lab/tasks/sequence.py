"""Sequence tasks (modadd, copy, reverse) and character-level LM behind the Task contract.

All of them reduce to (tokens, targets-with-IGNORE) batches, so the loss (mean cross-entropy on the
target positions) and the evaluation (token accuracy, exact match, perplexity) are written once.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from warmup_lab.data.sequences import IGNORE, Batch, SequenceData, copy_reverse, modadd
from warmup_lab.errors import ConfigError, require
from warmup_lab.models import build_sequence_model
from warmup_lab.tasks.base import Task

DATASETS = ("modadd", "copy", "reverse", "charlm")
EVAL_BATCH_SIZE = 256  # default of data.eval_batch_size


def build_data(cfg: DictConfig, device: torch.device) -> SequenceData:
    d, seed, bs = cfg.data, int(cfg.seed), int(cfg.train.batch_size)
    require(bs >= 1, "train.batch_size", bs, "an integer >= 1")
    name = d.get("name")
    if name == "modadd":
        return modadd(int(d.p), float(d.train_frac), int(d.seed), seed, bs, device)
    if name in ("copy", "reverse"):
        return copy_reverse(name, int(d.length), int(d.vocab), int(d.n_test), int(d.seed), seed, bs, device)
    if name == "charlm":
        from warmup_lab.data.pysource import corpus_text
        from warmup_lab.data.text import charlm

        corpus = corpus_text(str(d.corpus), int(d.max_chars)) if d.get("corpus") else None
        return charlm(d.get("path"), int(d.block_size), seed, bs, device, corpus)
    raise ConfigError("data", name, f"one of {', '.join(DATASETS)} for a sequence task")


def _loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=IGNORE)


def _eval_set(test: Batch, eval_batches: Any, eval_bs: int) -> list[Batch]:
    """The whole held-out set (eval_batches=null) or its first eval_batches * eval_bs examples."""
    x, y = test
    n = len(x) if eval_batches is None else min(len(x), int(eval_batches) * eval_bs)
    return [(x[i:i + eval_bs], y[i:i + eval_bs]) for i in range(0, n, eval_bs)]


def make_evaluate(batches: list[Batch], lm: bool):
    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        loss_sum, correct, tokens, exact, rows = 0.0, 0, 0, 0, 0
        for x, y in batches:
            logits = model(x)
            loss_sum += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                        ignore_index=IGNORE, reduction="sum").item()
            mask = y != IGNORE
            hit = (logits.argmax(-1) == y) & mask
            correct += int(hit.sum())
            tokens += int(mask.sum())
            exact += int((hit | ~mask).all(1).sum())
            rows += len(x)
        model.train(was_training)
        out = {"eval_loss": loss_sum / tokens, "eval_acc": correct / tokens}
        if lm:
            out["eval_ppl"] = math.exp(min(out["eval_loss"], 700.0))  # exp overflows past ~709
        else:
            out["eval_exact_match"] = exact / rows
        return out

    return evaluate


def build_sequence_task(cfg: DictConfig, device: torch.device) -> Task:
    data = build_data(cfg, device)
    kind = "lm" if data.name == "charlm" else "sequence"
    require(cfg.task.kind == kind, "task.kind", cfg.task.kind, f"{kind} for data={data.name}")
    model = build_sequence_model(cfg.model, data.vocab_size, data.seq_len, int(cfg.seed)).to(device)
    # Hessian-vector products (sharpness monitor) need attention with a double backward.
    model.math_attention = bool(OmegaConf.select(cfg, "sharpness.every", default=0)
                                or OmegaConf.select(cfg, "optimizer.lr_in_sharpness_units") is not None)
    model.train()
    eval_bs = int(cfg.data.get("eval_batch_size") or EVAL_BATCH_SIZE)
    batches = _eval_set(data.test, cfg.train.get("eval_batches"), eval_bs)
    info = {
        "vocab_size": data.vocab_size, "seq_len": data.seq_len, "n_train": data.n_train,
        "n_test": len(data.test[0]), "n_eval": sum(len(x) for x, _ in batches),
        "n_params": sum(p.numel() for p in model.parameters()), **data.info,
    }
    return Task(
        name=str(cfg.task.name), kind=kind, model=model, batch=data.batch, loss=_loss,
        evaluate=make_evaluate(batches, lm=kind == "lm"), batch_size=int(cfg.train.batch_size),
        chance_acc=1.0 / data.n_classes, info=info,
        baseline_loss=data.info.get("unigram_entropy", data.info.get("constant_predictor_loss")),
    )
