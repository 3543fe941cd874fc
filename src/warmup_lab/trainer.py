"""One training run, for every task: the loop, its live detectors, checkpoints and outputs.

The loop knows nothing about which task or schedule it runs: the Task gives batches, losses and
evaluations; the LRController sets each group's LR for update t. Every step's loss, LR and gradient
norm go to `metrics.csv`; the detectors of metrics.py watch the loss as it happens and a diverged run
stops at once. A run killed at any point resumes from its last checkpoint and ends with the same
summary as an uninterrupted run (batches are a pure function of (seed, step); the schedule a pure
function of the step; detector, optimizer and RNG state are checkpointed).
"""

from __future__ import annotations

import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from warmup_lab import runs
from warmup_lab.errors import require
from warmup_lab.loggers import make_logger
from warmup_lab.metrics import Monitor, failed_to_train
from warmup_lab.optim import build_optimizer, optimizer_info
from warmup_lab.record import MetricsFile, checkpoint_due, eval_due
from warmup_lab.schedules import LRController, build_schedule
from warmup_lab.sharpness import resolve_lr_units
from warmup_lab.tasks import build_task, with_true_batch_size

FINAL_LOSS_WINDOW = 10  # final_train_loss = mean of the last 10 training losses


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    require(name == "cpu" or torch.cuda.is_available() or not name.startswith("cuda"),
            "device", name, "cuda is not available here; use device=cpu or device=auto")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _validate(cfg: DictConfig) -> None:
    t = cfg.train
    require(int(t.steps) >= 1, "train.steps", t.steps, "must be an integer >= 1")
    require(int(t.batch_size) >= 1, "train.batch_size", t.batch_size, "must be >= 1")
    require(int(t.eval_every) >= 0, "train.eval_every", t.eval_every, "must be >= 0 (0 = only at the end)")
    require(int(t.checkpoint_every) >= 0, "train.checkpoint_every", t.checkpoint_every, "must be >= 0")
    require(t.grad_clip is None or float(t.grad_clip) > 0, "train.grad_clip", t.grad_clip, "must be > 0 or null")


def key_values(cfg: DictConfig, schedule_info: dict[str, Any]) -> dict[str, Any]:
    """The config values a report pivots on, flat, next to the full config."""
    model = cfg.model
    norm = model.get("norm_position") if model.get("family") == "transformer" else model.get("norm")
    return {
        "task": cfg.task.name,
        "model": model.name,
        "norm": norm,
        "optimizer": cfg.optimizer.name,
        "warmup": schedule_info.get("warmup"),
        "decay": schedule_info.get("decay"),
        "warmup_steps": schedule_info.get("warmup_steps"),
        "target_lr": float(cfg.optimizer.lr),
        "seed": int(cfg.seed),
        "train_steps": int(cfg.train.steps),
        "batch_size": int(cfg.train.batch_size),
    }


class Run:
    """State of one run between setup and summary; `execute()` is the whole thing."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        _validate(cfg)
        self.cfg, self.run_dir = cfg, run_dir
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
        betas = cfg.optimizer.get("betas")
        self.schedule = build_schedule(
            cfg.schedule,
            total_steps=int(cfg.train.steps),
            target_lr=float(cfg.optimizer.lr),
            betas=tuple(betas) if betas is not None else None,
        )
        self.lr = LRController(self.optimizer, self.schedule)
        self.monitor = Monitor(cfg.detect)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.metrics = MetricsFile(run_dir)
        self.evals: list[dict[str, Any]] = []
        self.sharpness: list[dict[str, float]] = []
        self.start_step, self.elapsed = 0, 0.0

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, next_step: int, elapsed: float) -> None:
        self.metrics.flush()
        state = {
            "step": next_step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr": self.lr.state_dict(),
            "monitor": self.monitor.state_dict(),
            "rng": _rng_state(),
            "evals": self.evals,
            "sharpness": self.sharpness,
            "elapsed": elapsed,
        }
        tmp = self.run_dir / (runs.CHECKPOINT_FILE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.run_dir / runs.CHECKPOINT_FILE)

    def load_checkpoint(self) -> bool:
        path = self.run_dir / runs.CHECKPOINT_FILE
        if not path.exists():
            return False
        try:
            state = torch.load(path, map_location=self.device, weights_only=False)
        except Exception as err:  # noqa: BLE001 - any unreadable checkpoint: keep it, start over
            kept = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
            path.rename(kept)
            warnings.warn(f"unreadable checkpoint {path} ({type(err).__name__}); kept as {kept.name}, "
                          "restarting this run from step 0")
            self.metrics.truncate(0)
            return False
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr.load_state_dict(state["lr"])
        self.monitor.load_state_dict(state["monitor"])
        _set_rng_state(state["rng"])
        self.evals, self.sharpness = state["evals"], state["sharpness"]
        self.start_step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.metrics.truncate(self.start_step)
        return True

    # -- measurements ------------------------------------------------------------------------
    def evaluate(self, steps_done: int) -> dict[str, Any]:
        row = {"step": steps_done, **{k: float(v) for k, v in self.task.evaluate(self.model).items()}}
        self.evals.append(row)
        self.metrics.add_eval(row)
        return row

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
                self.save_checkpoint(done, self.elapsed + time.perf_counter() - began)
                logger.log_steps(self.metrics.take_mirror())
        if bar is not None:
            bar.close()
        steps_run = step + 1 if steps > self.start_step else self.start_step
        if diverged:
            self.evaluate(steps_run)
        self.metrics.flush()
        logger.log_steps(self.metrics.take_mirror())
        wall = self.elapsed + time.perf_counter() - began
        return self.summarise(steps_run, diverged, wall, steps_timed / train_time if train_time else float("nan"))

    def summarise(self, steps_run: int, diverged: bool, wall: float, steps_per_s: float) -> dict[str, Any]:
        losses = self.metrics.last_losses(FINAL_LOSS_WINDOW)
        final_train = float(np.mean(losses)) if losses and all(map(math.isfinite, losses)) else float("nan")
        last_eval = self.evals[-1] if self.evals else {}
        l0 = self.monitor.l0 if self.monitor.l0 is not None else float("nan")
        if diverged:
            status = runs.DIVERGED
        elif not math.isfinite(final_train) or failed_to_train(
            final_train, l0, last_eval.get("eval_acc"), self.task.chance_acc, self.cfg.detect.failed
        ):
            status = runs.FAILED
        else:
            status = runs.COMPLETED
        finite_evals = [e for e in self.evals if math.isfinite(e.get("eval_loss", math.nan))]
        schedule_info = self.schedule.describe()
        summary: dict[str, Any] = {
            "status": status,
            "steps_run": steps_run,
            "diverged_step": self.monitor.divergence.diverged_step,
            "init_loss": l0,
            "final_train_loss": final_train,
            **{f"final_{k}": v for k, v in last_eval.items() if k != "step"},
            "best_eval_loss": min((e["eval_loss"] for e in finite_evals), default=None),
            "best_eval_acc": max((e["eval_acc"] for e in self.evals if "eval_acc" in e), default=None),
            **self.monitor.stats(),
            "spikes": self.monitor.spikes.events,
            "sharpness": self.sharpness,
            "wall_s": wall,
            "samples_per_s": steps_per_s * self.task.batch_size,
            **key_values(self.cfg, schedule_info),
            "schedule": schedule_info,
            "peak_lr": self.schedule.peak_lr,
            "lr_groups": self.lr.describe(),
            "chance_acc": self.task.chance_acc,
            "task_info": self.task.info,
            "optimizer_info": optimizer_info(self.optimizer),
            "detect": OmegaConf.to_container(self.cfg.detect, resolve=True),
            "config_hash": runs.config_hash(self.cfg),
            "experiment": OmegaConf.select(self.cfg, "experiment_name", default=None),
            "sweep_group": OmegaConf.select(self.cfg, "logger.group", default=None),
            "run_dir": str(self.run_dir),
            "device": str(self.device),
            "torch": torch.__version__,
        }
        return summary


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) the run `cfg` describes; returns its summary.

    Divergence and failure to train are results (status in the summary), not errors. An exception
    inside the run writes status `error` with the message, then propagates.
    """
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(cfg)
    done = runs.read_summary(run_dir)
    if done is not None and done.get("status") in runs.FINISHED_STATUSES:
        print(f"skip: {run_dir} already finished ({done['status']})", flush=True)
        return done
    run_dir.mkdir(parents=True, exist_ok=True)
    runs.write_config(run_dir, cfg)
    run = Run(cfg, run_dir)
    resumed = run.load_checkpoint()
    if resumed:
        print(f"resume: {run_dir} from step {run.start_step}", flush=True)
    config = runs.result_config(cfg)
    logger = make_logger(cfg, run_dir, config)
    ok = False
    try:
        summary = run.execute(logger)
        summary["resumed_from"] = run.start_step if resumed else None
        summary["wandb_mode"] = logger.mode
        logger.log_summary(summary)
        runs.write_summary(run_dir, summary)
        if not cfg.train.get("keep_checkpoint", False):
            (run_dir / runs.CHECKPOINT_FILE).unlink(missing_ok=True)
        ok = True
        return summary
    except Exception as err:
        runs.write_summary(run_dir, {"status": runs.ERROR, "error": f"{type(err).__name__}: {err}",
                                     "steps_run": run.start_step, "config_hash": runs.config_hash(cfg)})
        raise
    finally:
        logger.finish(ok)
