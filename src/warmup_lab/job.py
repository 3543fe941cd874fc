"""One run's life in its directory: skip, own, resume, execute, close with a summary.

trainer.Run is the loop; this module is what surrounds it. The config is validated before anything
is written; the directory is checked to hold this config's run before anything in it is skipped,
resumed or overwritten, and owned (locked) for the run's life. Divergence and failure to train are
results (a status), not errors; an exception inside the run writes status `error` with the message,
then propagates; a write that fails for lack of space or permission becomes one line (OutputError).
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from warmup_lab import runs, timing
from warmup_lab.errors import USER_ERRORS, RunTakenOver, output_error, require
from warmup_lab.lifecycle import Stopped
from warmup_lab.loggers import make_logger
from warmup_lab.summary import RunSummary, is_finished, read_summary, write_summary
from warmup_lab.trainer import Run, validate


def train(cfg: DictConfig, run_dir: Path | None = None) -> RunSummary:
    """Run (or resume, or skip if finished) the run `cfg` describes; returns its summary."""
    run_dir = Path(run_dir) if run_dir is not None else runs.run_dir_for(cfg)
    try:
        validate(cfg)
        _check_place(run_dir)
        done = _finished(cfg, run_dir)  # before the lock: a finished run in a read-only place is still a result
        if done is not None:
            return done
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            with runs.owned(run_dir) as owner:
                return _finished(cfg, run_dir) or _train_owned(cfg, run_dir, owner)
        except OSError as err:
            raise output_error(err, run_dir) or err from None
    except RunTakenOver:
        raise  # the directory is another process's now: leave it alone
    except USER_ERRORS:
        runs.remove_if_empty(run_dir)  # a rejected config leaves no directory (nor an empty runs_root)
        if run_dir.parent == Path(str(cfg.runs_root)):
            runs.remove_if_empty(run_dir.parent)
        raise


def _check_place(run_dir: Path) -> None:
    """The run directory, and every folder above it that exists, must be a directory."""
    for place in (run_dir, *run_dir.parents):
        if place.exists() or place.is_symlink():
            require(place.is_dir(), "out", str(run_dir), f"{place} is {'a FIFO' if place.is_fifo() else 'a file'}, "
                    "not a directory: set out= (or runs_root=) to a directory path")
            return


def _finished(cfg: DictConfig, run_dir: Path) -> RunSummary | None:
    """The summary of this config's finished run in `run_dir`, else None; another config's run is an error."""
    if not run_dir.is_dir():
        return None
    runs.check_same_config(run_dir, cfg)
    done = read_summary(run_dir)
    if is_finished(done):
        done["run_dir"] = str(run_dir)  # where it is now: a copied or moved run is not reported at its old path
        print(f"skip: {run_dir} already finished ({done['status']})", flush=True)
        return done
    return None


def _try_write_summary(owner: runs.Owner, summary: dict[str, Any]) -> None:
    """The closing summary of a run that stopped early, when the directory is still ours and the disk takes it."""
    try:
        owner.check()
        write_summary(owner.run_dir, summary)
    except (OSError, RunTakenOver):
        pass


def _train_owned(cfg: DictConfig, run_dir: Path, owner: runs.Owner) -> RunSummary:
    with timing.phase("build"):
        run = Run(cfg, run_dir)
    run.guard = owner.check
    with run.stop:  # a stop signal from here on (W&B init included) is acted on at the first step boundary
        return _execute(cfg, owner, run)


def _execute(cfg: DictConfig, owner: runs.Owner, run: Run) -> RunSummary:
    run_dir = owner.run_dir
    try:
        owner.check()
        runs.write_config(run_dir, cfg)
        resumed = run.load_checkpoint()
        if resumed:
            print(f"resume: {run_dir} from step {run.start_step}", flush=True)
        else:
            run.metrics.truncate(0)  # from step 0: rows a checkpoint-less earlier attempt left are cut
    except OSError as err:
        owner.explain()
        raise output_error(err, run_dir) or err from None
    config = runs.result_config(cfg)
    with timing.phase("wandb"):
        logger = make_logger(cfg, run_dir, config)
    ok = False
    stopped: Stopped | None = None
    closing = {"steps_run": run.start_step, "config_hash": runs.config_hash(cfg)}
    try:
        summary = run.execute(logger)
        summary["resumed_from"] = run.start_step if resumed else None
        summary["wandb_mode"] = logger.mode
        with timing.phase("wandb"):
            logger.log_summary(summary)
        owner.check()
        write_summary(run_dir, summary)
        if not cfg.train.keep_checkpoint:
            (run_dir / runs.CHECKPOINT_FILE).unlink(missing_ok=True)
        ok = True
        return summary
    except Stopped as stop:
        stopped = stop
        _try_write_summary(owner, {**closing, "status": stop.status, "steps_run": stop.step,
                                     "checkpoint_step": stop.step, "signal": signal.Signals(stop.signum).name})
        raise
    except KeyboardInterrupt:
        _try_write_summary(owner, {**closing, "status": runs.INTERRUPTED, "signal": "SIGINT"})
        raise
    except RunTakenOver:
        raise  # nothing more is written there
    except Exception as err:
        if isinstance(err, OSError):
            owner.explain()
        _try_write_summary(owner, {**closing, "status": runs.ERROR, "error": f"{type(err).__name__}: {err}"})
        if isinstance(err, OSError):
            raise output_error(err, run_dir) or err from None
        raise
    finally:
        with timing.phase("wandb"):
            logger.finish(ok)
        if stopped is not None:
            run.stop.chain(stopped.signum)
