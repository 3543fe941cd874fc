"""One training run, for every task: the loop, its live detectors and its summary.

The loop knows nothing about which task or schedule it runs: the Task gives batches, losses and
evaluations; the LRController sets each group's LR for update t. Every step's loss, LR and gradient
norm go to `metrics.csv`; the detectors of detectors.py watch the loss as it happens and a diverged run
stops at once. A run killed at any point resumes from its last checkpoint and ends with the same
summary as an uninterrupted run (batches are a pure function of (seed, step); the schedule a pure
function of the step; detector, optimizer and RNG state are checkpointed). A stop signal noted by
lifecycle.StopRequest is acted on at the next step boundary. The run directory around the loop
(skip, lock, resume, summary, errors) is job.py's.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from warmup_lab import checkpoint, runs, timing
from warmup_lab.config_keys import check_keys
from warmup_lab.detectors import Monitor, failed_to_train
from warmup_lab.errors import require
from warmup_lab.lifecycle import Stopped, StopRequest
from warmup_lab.optim import build_optimizer, optimizer_info
from warmup_lab.optim import validate as validate_optimizer
from warmup_lab.record import MetricsFile, checkpoint_due, eval_due
from warmup_lab.schedules import LRController, schedule_from_cfg
from warmup_lab.sharpness import resolve_lr_units
from warmup_lab.summary import RunSummary, key_values
from warmup_lab.tasks import build_task, with_true_batch_size


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    require(name == "cpu" or name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()), "device", name,
            "one of cpu, cuda, cuda:<index>, auto")
    require(name == "cpu" or torch.cuda.is_available(), "device", name,
            "cuda is not available here; use device=cpu or device=auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _integer(cfg: DictConfig, key: str, lo: int, *, nullable: bool = False, note: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    ok = (value is None and nullable) or (isinstance(value, int) and not isinstance(value, bool) and value >= lo)
    require(ok, key, value, f"must be an integer >= {lo}{' or null' if nullable else ''}{note}")


def validate(cfg: DictConfig) -> None:
    """Every run-level value, checked before anything is written (a rejected config leaves no directory)."""
    check_keys(cfg)
    _integer(cfg, "train.steps", 1)
    _integer(cfg, "train.batch_size", 1)
    _integer(cfg, "train.eval_every", 0, note=" (0 = only at the end)")
    _integer(cfg, "train.eval_batches", 1, nullable=True, note=" (null = all)")
    _integer(cfg, "train.checkpoint_every", 0, note=" (0 = never)")
    _integer(cfg, "seed", 0)
    _integer(cfg, "threads", 1, nullable=True, note=" (null = torch's default)")
    _integer(cfg, "sharpness.every", 0, note=" (0 = off)")
    _integer(cfg, "sharpness.iters", 1)
    clip = cfg.train.grad_clip
    require(clip is None or (isinstance(clip, (int, float)) and not isinstance(clip, bool) and math.isfinite(clip)
                             and clip > 0), "train.grad_clip", clip, "must be a number > 0 or null")
    resolve_device(str(cfg.device))
    validate_optimizer(cfg.optimizer)
    schedule_from_cfg(cfg)




class Run:
    """State of one run between setup and summary; `execute()` is the whole thing."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        validate(cfg)
        self.cfg, self.run_dir = cfg, run_dir
        # The hash of the config as requested (the run directory's name), not of the resolved one below.
        self.config_hash = runs.config_hash(cfg)
        self.stop = StopRequest()  # entered by job.train around execute()
        self.device = resolve_device(str(cfg.device))
        if cfg.get("threads"):
            torch.set_num_threads(int(cfg.threads))
        seed_everything(int(cfg.seed))
        self.task = build_task(cfg, self.device)
        self.model = self.task.model
        # lambda0 at init, before the schedule: optimizer.lr_in_sharpness_units=c sets eta = c / lambda0.
        cfg, mechanism_info = resolve_lr_units(with_true_batch_size(cfg, self.task), self.task)
        self.cfg = cfg
        self.task.info.update(mechanism_info)  # recorded in the summary's task_info
        self.optimizer = build_optimizer(cfg.optimizer, self.model)
        self.schedule = schedule_from_cfg(cfg)
        self.lr = LRController(self.optimizer, self.schedule)
        self.monitor = Monitor(cfg.detect)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.metrics = MetricsFile(run_dir)
        self.evals: list[dict[str, Any]] = []
        self.sharpness: list[dict[str, float]] = []
        self.start_step, self.elapsed = 0, 0.0
        self.guard: Callable[[], None] = lambda: None  # raises when the run directory is no longer ours

    # -- checkpoints -------------------------------------------------------------------------
    def flush(self) -> None:
        """Pending rows to disk, once this process is checked to still own the run directory (job.py sets guard)."""
        self.guard()
        self.metrics.flush()

    def save_checkpoint(self, next_step: int, elapsed: float) -> None:
        self.flush()
        state = {
            "step": next_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "monitor": self.monitor.state_dict(),
            "rng": checkpoint.rng_state(),
            "evals": self.evals,
            "sharpness": self.sharpness,
            "elapsed": elapsed,
        }
        checkpoint.save(self.run_dir, state)

    def checkpoint_and_mirror(self, next_step: int, elapsed: float, logger: Any) -> None:
        with timing.phase("checkpoint"):
            self.save_checkpoint(next_step, elapsed)
        with timing.phase("wandb"):
            logger.log_steps(self.metrics.take_mirror())

    def load_checkpoint(self) -> bool:
        state = checkpoint.load(self.run_dir, self.device)
        if state is None:
            return False
        why = checkpoint.misfit(state, self.model, self.optimizer) or self.metrics.missing_steps(int(state["step"]))
        if why is not None:  # a gap in metrics.csv is never left: the run is redone from step 0 instead
            checkpoint.set_aside(self.run_dir, "unusable", why)
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.monitor.load_state_dict(state["monitor"])
        checkpoint.set_rng_state(state["rng"])
        self.evals, self.sharpness = state["evals"], state["sharpness"]
        self.start_step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.metrics.restore(self.start_step, self.evals, self.sharpness)
        return True

    # -- measurements ------------------------------------------------------------------------
    @timing.timed("eval")
    def evaluate(self, steps_done: int) -> dict[str, Any]:
        row = {"step": steps_done, **{k: float(v) for k, v in self.task.evaluate(self.model).items()}}
        self.evals.append(row)
        self.metrics.add_eval(row)
        return row

    @timing.timed("eval")
    def measure_sharpness(self, step: int, lr: float) -> dict[str, float]:
        from warmup_lab.sharpness import adam_preconditioner, instability_ratio, top_hessian_eigenvalue

        batch = self.task.batch(0)  # a fixed batch: sharpness is compared across steps
        value = top_hessian_eigenvalue(
            lambda: self.task.loss(self.model, batch), self.params,
            iters=int(self.cfg.sharpness.iters),
            preconditioner=adam_preconditioner(self.optimizer, self.params),
            buffers=list(self.model.buffers()),  # BatchNorm statistics must not move
        )
        row = {"step": step, "sharpness": value, "lr_used": lr, "lr_sharpness_over_2": instability_ratio(lr, value),
               "two_over_lr": 2.0 / lr if lr > 0 else None}  # GD's stability edge, beside the sharpness
        self.sharpness.append(row)
        return row

    # -- the loop ----------------------------------------------------------------------------
    def execute(self, logger: Any) -> dict[str, Any]:
        cfg, task, model, opt = self.cfg, self.task, self.model, self.optimizer
        steps, t = int(cfg.train.steps), cfg.train
        clip = float(t.grad_clip) if t.grad_clip is not None else math.inf
        sharp_every = int(cfg.sharpness.every)
        bar = None
        if t.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps, initial=self.start_step, desc=self.run_dir.name, leave=False, mininterval=0.5)
        model.train()
        began = time.perf_counter()
        train_time, steps_timed = 0.0, 0
        diverged = False
        step = self.start_step
        for step in range(self.start_step, steps):
            tick = time.perf_counter()
            lr = self.lr.apply(step)
            loss = task.loss(model, task.batch(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip == math.inf:  # the norm alone: clip_grad_norm_ would also scale every gradient by 1.0
                grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
            else:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
            opt.step()
            loss_value, grad_value = loss.item(), grad_norm.item()
            spike, diverged = self.monitor.update(step, loss_value)
            self.lr.observe(step, loss_value)
            self.metrics.add_step(step, loss_value, lr, grad_value, spike)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{loss_value:.4g}", lr=f"{lr:.3g}", refresh=False)
            # Throughput counts the whole step, logging and detection included (not eval/checkpoints).
            train_time += time.perf_counter() - tick
            steps_timed += 1
            if diverged:
                break
            done = step + 1
            if sharp_every and done % sharp_every == 0:
                self.metrics.add_eval_extra(self.measure_sharpness(done, lr))
            if eval_due(done, steps, int(t.eval_every)):
                self.evaluate(done)
            if checkpoint_due(done, steps, int(t.checkpoint_every)):
                self.checkpoint_and_mirror(done, self.elapsed + time.perf_counter() - began, logger)
            if self.stop.signum is not None and done < steps:  # preemption / Ctrl-C: checkpoint here, stop
                self.checkpoint_and_mirror(done, self.elapsed + time.perf_counter() - began, logger)
                timing.add("train", train_time)
                raise Stopped(self.stop.signum, done)
        timing.add("train", train_time)
        if bar is not None:
            bar.close()
        steps_run = step + 1 if steps > self.start_step else self.start_step
        if diverged:
            self.evaluate(steps_run)
        self.flush()
        with timing.phase("wandb"):
            logger.log_steps(self.metrics.take_mirror())
        wall = self.elapsed + time.perf_counter() - began
        return self.summarise(steps_run, diverged, wall, steps_timed / train_time if train_time else float("nan"))

    def summarise(self, steps_run: int, diverged: bool, wall: float, steps_per_s: float) -> RunSummary:
        losses = self.metrics.final_losses()
        final_train = float(np.mean(losses)) if losses and all(map(math.isfinite, losses)) else float("nan")
        last_eval = self.evals[-1] if self.evals else {}
        l0 = self.monitor.l0 if self.monitor.l0 is not None else float("nan")
        if diverged:
            status = runs.DIVERGED
        elif failed_to_train(final_train, l0, last_eval.get("eval_acc"), self.cfg.detect.failed):
            status = runs.FAILED
        else:
            status = runs.COMPLETED
        # peak_lr = the largest LR applied (max of metrics.csv `lr`, flushed by execute): an untuned
        # multiplicative warmup never reaches the nominal peak that target_lr names.
        peak_lr = self.metrics.peak_lr()
        finite_evals = [e for e in self.evals if math.isfinite(e.get("eval_loss", math.nan))]
        schedule_info = self.schedule.describe()
        summary: RunSummary = {
            "status": status,
            "steps_run": steps_run,
            "diverged_step": self.monitor.divergence.diverged_step,
            "init_loss": l0,
            "final_train_loss": final_train,
            **{f"final_{k}": v for k, v in last_eval.items() if k != "step"},
            "best_eval_loss": min((e["eval_loss"] for e in finite_evals), default=None),
            "best_eval_acc": max((e["eval_acc"] for e in self.evals if "eval_acc" in e), default=None),
            **self.monitor.stats(),
            "spikes": self.monitor.spikes.all_events(),
            "sharpness": self.sharpness,
            "wall_s": wall,
            "samples_per_s": steps_per_s * self.task.batch_size,
            **key_values(self.cfg, schedule_info),
            "schedule": schedule_info,
            "peak_lr": peak_lr,
            "nominal_peak_lr": self.schedule.peak_lr,
            "lr_groups": self.lr.describe(),
            "chance_acc": self.task.chance_acc,
            "task_info": self.task.info,
            "optimizer_info": optimizer_info(self.optimizer),
            "detect": OmegaConf.to_container(self.cfg.detect, resolve=True),
            "config_hash": self.config_hash,
            "experiment": OmegaConf.select(self.cfg, "experiment_name", default=None),
            "sweep_group": OmegaConf.select(self.cfg, "logger.group", default=None),
            "run_dir": str(self.run_dir),
            "device": str(self.device),
            "torch": torch.__version__,
        }
        return summary
