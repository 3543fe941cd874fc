"""`python -m warmup_lab.train <overrides>`: one training run as a Hydra job.

Inside a multirun (any launcher) each job is one run; a job whose run already finished is skipped,
which is what makes a re-run of a sweep resume it. A job running in a launcher's worker process
(joblib/loky, submitit_local) stops with the sweep: when the process that launched it dies, the job
saves a checkpoint at its next step boundary and exits, so a re-run never races an orphan.
Exit codes: 0 done (a diverged run is a result), 2 bad input, 75 preempted (SIGTERM/SIGUSR1, checkpoint
saved: re-run to resume), 130 Ctrl-C.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from warmup_lab import runs, timing  # runs also registers the ${hash:} resolver of conf/train.yaml
from warmup_lab.cli import check_argv
from warmup_lab.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED, ConfigError, exit_on_user_error
from warmup_lab.paths import CONF_DIR


def _run_dir(cfg: DictConfig) -> Path:
    """A multirun job's directory is Hydra's (runs_root/<name>-<hash>); a single run's is made by train()."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().runtime.output_dir)
    return runs.run_dir_for(cfg)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> float:
    timing.begin_job()
    try:
        return _job(cfg)
    finally:
        timing.end_job()


def _job(cfg: DictConfig) -> float:
    with timing.phase("startup"):  # the first job of a process pays for torch's import here
        from warmup_lab.job import train
        from warmup_lab.lifecycle import Stopped, check_not_stopped, exit_process, stop_with_launcher

    if cfg.get("out") and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise ConfigError("out", cfg.out, "a multirun gives each job its own directory: drop out= (set runs_root=)")
    stop_with_launcher()
    run_dir = _run_dir(cfg)
    check_not_stopped(str(run_dir))  # a worker that was told to stop starts no further run
    try:
        summary = train(cfg, run_dir)
    except Stopped as stop:
        print(f"{stop.status}: {stop} with a checkpoint in {run_dir}; run the same command again to resume",
              file=sys.stderr, flush=True)
        exit_process(EXIT_INTERRUPTED if stop.status == "interrupted" else EXIT_PREEMPTED)
    except KeyboardInterrupt:
        print(f"interrupted: Ctrl-C in {run_dir}; run the same command again to resume from its last checkpoint",
              file=sys.stderr, flush=True)
        exit_process(EXIT_INTERRUPTED)
    print(
        f"{summary['status']}: steps_run={summary['steps_run']} final_train_loss={summary.get('final_train_loss')}"
        f" final_eval_acc={summary.get('final_eval_acc')} -> {summary.get('run_dir', run_dir)}",
        flush=True,
    )
    loss = summary.get("final_train_loss")
    return float(loss) if isinstance(loss, (int, float)) else float("nan")


if __name__ == "__main__":
    from warmup_lab.lifecycle import LAUNCHER_PID_ENV, stop_with_launcher

    stop_with_launcher()  # started by scripts/sweep.py: stop with it
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())  # the workers of our launcher stop with us
    check_argv()  # one line for an unknown group option or `-m` with `out=`, before Hydra's multi-line ones
    main()
