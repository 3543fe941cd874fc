"""One kind of user-facing error, and one way to report it.

Bad input must end in a single line that names the field, the value and the fix,
and a non-zero exit; never a traceback, never lost results. Exit codes:
2 bad input (config, data, an unwritable output); 75 stopped by SIGTERM/SIGUSR1 with a checkpoint
saved (re-run to resume; EX_TEMPFAIL); 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import errno
import functools
import sys
from pathlib import Path
from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

EXIT_CONFIG = 2
EXIT_PREEMPTED = 75
EXIT_INTERRUPTED = 130


class ConfigError(ValueError):
    """A config value that cannot work: `field=value is invalid: expected`."""

    def __init__(self, field: str, value: Any, expected: str):
        self.field, self.value, self.expected = field, value, expected
        super().__init__(f"{field}={value!r} is invalid: {expected}")


class DataMissingError(RuntimeError):
    """A data set that is not on disk, or not usable; the message says what to give instead."""


class OutputError(RuntimeError):
    """A run's files cannot be written (disk full, read-only): the message names the path and the fix."""


class RunTakenOver(OutputError):
    """The run directory was removed or re-owned while this process wrote to it; it stops, writing nothing."""


USER_ERRORS = (ConfigError, DataMissingError, OutputError)

# A write that failed because of where the run lives: one line naming the path and the fix.
_ROOM = "free space there, or set {opt} to a disk with room"
_WRITABLE = "set {opt} to a writable directory"
_OUTPUT_ERRNOS = {errno.ENOSPC: _ROOM, errno.EDQUOT: _ROOM,
                  errno.EFBIG: "the file size limit (ulimit -f) was reached; raise it or set {opt} elsewhere",
                  errno.EROFS: _WRITABLE, errno.EACCES: _WRITABLE, errno.EPERM: _WRITABLE,
                  errno.EEXIST: "a file is in the way; set {opt} to a directory",
                  errno.ENOTDIR: "a file is in the way; set {opt} to a directory",
                  errno.EMFILE: "too many open files (ulimit -n); raise the limit (ulimit -n 1024) and run again"}


def output_error(err: OSError, where: Path, opt: str = "out= (or runs_root=)") -> OutputError | None:
    """The one-line OutputError for a write that failed for lack of room or permission, else None."""
    fix = _OUTPUT_ERRNOS.get(err.errno or 0)
    if fix is None:
        return None
    return OutputError(f"cannot write {err.filename or where}: {err.strerror}; {fix.format(opt=opt)}")


def exit_on_user_error(fn: F) -> F:
    """Wrap a command's entry point: a user error prints one line to stderr and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(EXIT_CONFIG)

    return wrapper  # type: ignore[return-value]


def require(cond: bool, field: str, value: Any, expected: str) -> None:
    """Raise ConfigError unless `cond` holds."""
    if not cond:
        raise ConfigError(field, value, expected)
