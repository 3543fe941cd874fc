"""One training run, for every task: the loop, its live detectors, checkpoints and outputs.

The loop knows nothing about which task or schedule it runs: the Task gives batches, losses and
evaluations; the LRController sets each group's LR for update t. Every step's loss, LR and gradient
norm go to `metrics.csv`; the detectors of detectors.py watch the loss as it happens and a diverged run
stops at once. A run killed at any point resumes from its last checkpoint and ends with the same
summary as an uninterrupted run (batches are a pure function of (seed, step); the schedule a pure
function of the step; detector, optimizer and RNG state are checkpointed).

SIGTERM, SIGUSR1 (what SLURM sends before a preemption or time limit) and Ctrl-C are noted by a
handler and acted on at the next step boundary: the run saves a checkpoint at that step, writes a
`preempted` / `interrupted` summary and raises `Stopped`; the same command resumes it exactly.
"""

from __future__ import annotations

import csv
import errno
import math
import os
import random
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from warmup_lab import runs
from warmup_lab.errors import USER_ERRORS, OutputError, require
from warmup_lab.loggers import make_logger
from warmup_lab.detectors import Monitor, failed_to_train
from warmup_lab.optim import build_optimizer, optimizer_info
from warmup_lab.optim import validate as validate_optimizer
from warmup_lab.record import MetricsFile, checkpoint_due, eval_due
from warmup_lab.schedules import LRController, schedule_from_cfg
from warmup_lab.sharpness import resolve_lr_units
from warmup_lab.summary import RunSummary, is_finished, key_values, read_summary, write_summary
from warmup_lab.tasks import build_task, with_true_batch_size

FINAL_LOSS_WINDOW = 10  # final_train_loss = mean of the last 10 training losses


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


LAUNCHER_PID_ENV = "WARMUP_LAB_LAUNCHER_PID"  # set by the command-line process; its workers inherit it
_launcher = {"watching": False, "gone": False}


def stop_with_launcher(poll_s: float = 1.0) -> None:
    """In a direct child of the launching process: SIGTERM ourselves once that process is gone.

    Loky workers outlive a killed joblib launcher; this makes them stop (a training one checkpoints at
    its next step boundary, an idle one dies) before a re-run could race them. A process whose parent
    is not the launcher (the launcher itself, a SLURM job) is left alone.
    """
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if _launcher["watching"] or not launcher.isdigit() or os.getppid() != int(launcher):
        return

    def watch() -> None:
        while os.getppid() == int(launcher):
            time.sleep(poll_s)
        _launcher["gone"] = True
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-launcher", daemon=True).start()
    _launcher["watching"] = True


def exit_process(code: int) -> None:
    """sys.exit, except in an orphaned worker, where sys.exit would only end the job and leave the process."""
    if _launcher["gone"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _integer(cfg: DictConfig, key: str, lo: int, *, nullable: bool = False, note: str = "") -> None:
    value = OmegaConf.select(cfg, key)
    ok = (value is None and nullable) or (isinstance(value, int) and not isinstance(value, bool) and value >= lo)
    require(ok, key, value, f"must be an integer >= {lo}{' or null' if nullable else ''}{note}")


def _validate(cfg: DictConfig) -> None:
    """Every run-level value, checked before anything is written (a rejected config leaves no directory)."""
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
    require(isinstance(cfg.train.progress, bool), "train.progress", cfg.train.progress, "must be true or false")
    resolve_device(str(cfg.device))
    validate_optimizer(cfg.optimizer)
    schedule_from_cfg(cfg)


class Stopped(Exception):
    """A stop signal arrived; the run saved a checkpoint after `step` updates and ends, resumable."""

    def __init__(self, signum: int, step: int):
        self.signum, self.step = signum, step
        self.status = runs.INTERRUPTED if signum == signal.SIGINT else runs.PREEMPTED
        super().__init__(f"{signal.Signals(signum).name} at step {step}")


class StopRequest:
    """Handlers that only note a stop signal; the loop acts on it at the next step boundary.

    A second Ctrl-C stops at once (KeyboardInterrupt). SIGUSR2 is taken too when a handler is already
    installed for it (submitit's checkpoint-and-requeue): after our checkpoint, `chain()` hands the
    signal to that handler, so the SLURM job is requeued and resumes from the checkpoint.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            wanted = list(self.SIGNALS)
            if callable(signal.getsignal(signal.SIGUSR2)):
                wanted.append(signal.SIGUSR2)
            for sig in wanted:
                self.previous[sig] = signal.signal(sig, self._note)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():  # kept in self.previous for chain()
            signal.signal(sig, handler)

    def chain(self, signum: int) -> None:
        """Pass `signum` on to the handler we replaced (submitit requeues the job there)."""
        handler = self.previous.get(signum)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signum, None)


class Run:
    """State of one run between setup and summary; `execute()` is the whole thing."""

    def __init__(self, cfg: DictConfig, run_dir: Path):
        _validate(cfg)
        self.cfg, self.run_dir = cfg, run_dir
        # The hash of the config as requested (the run directory's name), not of the resolved one below.
        self.config_hash = runs.config_hash(cfg)
        self.stop = StopRequest()
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
        try:  # through a Python file: a full disk is then an OSError naming ENOSPC, not torch's zip error
            with open(tmp, "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.run_dir / runs.CHECKPOINT_FILE)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

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
            if self.stop.signum is not None and done < steps:  # preemption / Ctrl-C: checkpoint here, stop
                self.save_checkpoint(done, self.elapsed + time.perf_counter() - began)
                logger.log_steps(self.metrics.take_mirror())
                raise Stopped(self.stop.signum, done)
        if bar is not None:
            bar.close()
        steps_run = step + 1 if steps > self.start_step else self.start_step
        if diverged:
            self.evaluate(steps_run)
        self.metrics.flush()
        logger.log_steps(self.metrics.take_mirror())
        wall = self.elapsed + time.perf_counter() - began
        return self.summarise(steps_run, diverged, wall, steps_timed / train_time if train_time else float("nan"))

    def summarise(self, steps_run: int, diverged: bool, wall: float, steps_per_s: float) -> RunSummary:
        losses = self.metrics.last_losses(FINAL_LOSS_WINDOW)
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
        with (self.run_dir / runs.METRICS_FILE).open(newline="") as fh:
            peak_lr = max((float(r["lr"]) for r in csv.DictReader(fh)), default=float("nan"))
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


# A write that failed because of where the run lives: one line naming the path and the fix.
_OUTPUT_ERRNOS = {errno.ENOSPC: "free space there, or set out=/runs_root= to a disk with room",
                  errno.EDQUOT: "free space there, or set out=/runs_root= to a disk with room",
                  errno.EFBIG: "the file size limit (ulimit -f) was reached; raise it or set out=/runs_root=",
                  errno.EROFS: "set out= or runs_root= to a writable directory",
                  errno.EACCES: "set out= or runs_root= to a writable directory",
                  errno.EPERM: "set out= or runs_root= to a writable directory"}


def _output_error(err: OSError, run_dir: Path) -> OutputError | None:
    fix = _OUTPUT_ERRNOS.get(err.errno or 0)
    if fix is None:
        return None
    return OutputError(f"cannot write {err.filename or run_dir}: {err.strerror}; {fix}")


def _try_write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    """The closing summary of a run that stopped early, when the disk still takes it."""
    try:
        write_summary(run_dir, summary)
    except OSError:
        pass


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict[str, Any]:
    """Run (or resume, or skip if finished) the run `cfg` describes; returns its summary.

    Divergence and failure to train are results (status in the summary), not errors. The config is
    validated before anything is written; the run directory is owned (locked) for the run's life and
    checked to hold this config's run before anything in it is skipped, resumed or overwritten. An
    exception inside the run writes status `error` with the message, then propagates; a write that
    fails for lack of space or permission becomes an OutputError (one line).
    """
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(cfg)
    try:
        _validate(cfg)
        done = _finished(cfg, run_dir)  # before the lock: a finished run in a read-only place is still a result
        if done is not None:
            return done
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with runs.owned(run_dir):
                return _finished(cfg, run_dir) or _train_owned(cfg, run_dir)
        except OSError as err:
            raise _output_error(err, run_dir) or err from None
    except USER_ERRORS:
        runs.remove_if_empty(run_dir)  # a rejected config leaves no directory (nor an empty runs_root)
        if run_dir.parent == Path(str(cfg.runs_root)):
            runs.remove_if_empty(run_dir.parent)
        raise


def _finished(cfg: DictConfig, run_dir: Path) -> RunSummary | None:
    """The summary of this config's finished run in `run_dir`, else None; another config's run is an error."""
    if not run_dir.is_dir():
        return None
    runs.check_same_config(run_dir, cfg)
    done = read_summary(run_dir)
    if is_finished(done):
        print(f"skip: {run_dir} already finished ({done['status']})", flush=True)
        return done
    return None


def _train_owned(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    run = Run(cfg, run_dir)
    with run.stop:  # a stop signal from here on (W&B init included) is acted on at the first step boundary
        return _execute(cfg, run_dir, run)


def _execute(cfg: DictConfig, run_dir: Path, run: Run) -> dict[str, Any]:
    try:
        runs.write_config(run_dir, cfg)
        resumed = run.load_checkpoint()
        if resumed:
            print(f"resume: {run_dir} from step {run.start_step}", flush=True)
        else:
            run.metrics.truncate(0)  # from step 0: rows a checkpoint-less earlier attempt left are cut
    except OSError as err:
        raise _output_error(err, run_dir) or err from None
    config = runs.result_config(cfg)
    logger = make_logger(cfg, run_dir, config)
    ok = False
    stopped: Stopped | None = None
    closing = {"steps_run": run.start_step, "config_hash": runs.config_hash(cfg)}
    try:
        summary = run.execute(logger)
        summary["resumed_from"] = run.start_step if resumed else None
        summary["wandb_mode"] = logger.mode
        logger.log_summary(summary)
        write_summary(run_dir, summary)
        if not cfg.train.get("keep_checkpoint", False):
            (run_dir / runs.CHECKPOINT_FILE).unlink(missing_ok=True)
        ok = True
        return summary
    except Stopped as stop:
        stopped = stop
        _try_write_summary(run_dir, {**closing, "status": stop.status, "steps_run": stop.step,
                                     "checkpoint_step": stop.step, "signal": signal.Signals(stop.signum).name})
        raise
    except KeyboardInterrupt:
        _try_write_summary(run_dir, {**closing, "status": runs.INTERRUPTED, "signal": "SIGINT"})
        raise
    except Exception as err:
        _try_write_summary(run_dir, {**closing, "status": runs.ERROR, "error": f"{type(err).__name__}: {err}"})
        if isinstance(err, OSError):
            raise _output_error(err, run_dir) or err from None
        raise
    finally:
        logger.finish(ok)
        if stopped is not None:
            run.stop.chain(stopped.signum)
