"""The process around a run: stop signals, and workers that stop with the process that launched them.

SIGTERM, SIGUSR1 (what SLURM sends before a preemption or time limit) and Ctrl-C are noted by a
handler and acted on at the next step boundary: the run saves a checkpoint at that step, writes a
`preempted` / `interrupted` summary and raises `Stopped`; the same command resumes it exactly.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

from hydra.experimental.callback import Callback

from warmup_lab import runs
from warmup_lab.errors import EXIT_CONFIG, EXIT_INTERRUPTED, EXIT_PREEMPTED, ConfigError, output_error

LAUNCHER_PID_ENV = "WARMUP_LAB_LAUNCHER_PID"  # set by the command-line process; its workers inherit it
_launcher = {"watching": False, "gone": False}
# The first stop signal this process noted, in any of its runs: a worker process (loky, submitit) runs
# job after job, and after a stop request it starts none (check_not_stopped at the job's entry).
_stopped: dict[str, int | None] = {"signum": None}


def stop_requested() -> int | None:
    """The stop signal this process received (SIGTERM when its launcher is gone), else None."""
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if _launcher["watching"] and launcher.isdigit() and os.getppid() != int(launcher):
        _launcher["gone"] = True  # seen here before the watcher's next poll
    if _stopped["signum"] is None and _launcher["gone"]:
        _stopped["signum"] = signal.SIGTERM
    return _stopped["signum"]


def check_not_stopped(what: str) -> None:
    """At a job's entry: after a stop request to this process, say so and exit 75 instead of starting `what`."""
    signum = stop_requested()
    if signum is not None:
        print(f"not started: {what}; this worker got {signal.Signals(signum).name} and starts no run after a stop "
              "request (run the same command again to resume)", file=sys.stderr, flush=True)
        exit_process(EXIT_INTERRUPTED if signum == signal.SIGINT else EXIT_PREEMPTED)


class JobStopped(Exception):
    """A run stopped inside a SLURM job (submitit): raised instead of sys.exit, so that submitit records the
    job's end as its result; a SystemExit leaves no result, and without SLURM accounting the launcher
    would wait for the job forever."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"the run stopped with exit code {code} (75 preempted, 130 interrupted) after saving a "
                         "checkpoint; run the same command again to resume it")


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
    """sys.exit, except in an orphaned worker, where sys.exit would only end the job and leave the process,
    and in a SLURM job of submitit, which raises JobStopped (see there)."""
    if _launcher["gone"]:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if os.environ.get("SUBMITIT_EXECUTOR") == "slurm":
        raise JobStopped(code)
    sys.exit(code)


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
        if _stopped["signum"] is None and signum != signal.SIGUSR2:  # USR2: submitit requeues the job itself
            _stopped["signum"] = signum

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


MULTIRUN_OPEN_FILES = 64  # a joblib multirun's launcher fails below this (loky opens pipes and modules)


def check_open_files(argv: list[str]) -> None:
    """Before a multirun: raise a low soft open-file limit up to the hard one, or refuse in one line."""
    import resource

    if not {"-m", "--multirun"} & set(argv):
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= MULTIRUN_OPEN_FILES:
        return
    if hard == resource.RLIM_INFINITY or hard >= MULTIRUN_OPEN_FILES:
        resource.setrlimit(resource.RLIMIT_NOFILE, (MULTIRUN_OPEN_FILES, hard))
        return
    raise ConfigError("ulimit -n", soft, f"a multirun's launcher needs at least {MULTIRUN_OPEN_FILES} open files: "
                      "raise the limit (ulimit -n 1024) and run again")


class SweepDirCheck(Callback):
    """A multirun whose sweep directory cannot be made ends in one line, not Hydra's traceback (conf: hydra.callbacks)."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from pathlib import Path

        where = Path(str(config.hydra.sweep.dir))
        try:
            where.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            problem = output_error(err, where, "runs_root=")
            print(f"error: {problem or f'cannot make {where}: {err.strerror}; set runs_root= to a writable directory'}",
                  file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG)  # SystemExit passes Hydra's run_and_report, which would print a traceback
