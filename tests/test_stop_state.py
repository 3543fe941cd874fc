"""After a stop request a worker process starts no further run (the flake of issue 14), and a SLURM job
ends by an exception submitit records, not by sys.exit."""

from __future__ import annotations

import signal

import pytest

from warmup_lab import lifecycle
from warmup_lab.errors import EXIT_INTERRUPTED, EXIT_PREEMPTED


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    monkeypatch.setitem(lifecycle._stopped, "signum", None)
    monkeypatch.setitem(lifecycle._launcher, "gone", False)
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)


def test_a_run_starts_when_no_stop_was_requested():
    lifecycle.check_not_stopped("run-a")  # returns: nothing asked this process to stop


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, EXIT_PREEMPTED), (signal.SIGUSR1, EXIT_PREEMPTED),
                                      (signal.SIGINT, EXIT_INTERRUPTED)])
def test_after_a_stop_signal_in_one_run_the_next_job_of_the_process_does_not_start(sig, code, capsys):
    with lifecycle.StopRequest() as stop:  # the first run of a worker notes the signal ...
        signal.raise_signal(sig)
    assert stop.signum == sig
    with pytest.raises(SystemExit) as exited:  # ... and the worker's next job refuses to start
        lifecycle.check_not_stopped("run-b")
    assert exited.value.code == code
    assert "not started: run-b" in capsys.readouterr().err


def test_usr2_is_submitits_requeue_not_a_stop_of_the_process():
    lifecycle.StopRequest()._note(signal.SIGUSR2, None)
    assert lifecycle.stop_requested() is None


def test_a_gone_launcher_is_a_stop_request():
    lifecycle._launcher["gone"] = True
    assert lifecycle.stop_requested() == signal.SIGTERM


def test_a_slurm_job_ends_by_an_exception_submitit_records(monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    with pytest.raises(lifecycle.JobStopped, match="exit code 75 .*run the same command again"):
        lifecycle.exit_process(EXIT_PREEMPTED)
    monkeypatch.delenv("SUBMITIT_EXECUTOR")
    with pytest.raises(SystemExit):
        lifecycle.exit_process(EXIT_PREEMPTED)
