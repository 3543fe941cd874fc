"""One kind of user-facing error, and one way to report it.

Bad input must end in a single line that names the field, the value and the fix,
and a non-zero exit; never a traceback, never lost results. Exit codes:
2 bad input (config, data, an unwritable output); 75 stopped by SIGTERM/SIGUSR1 with a checkpoint
saved (re-run to resume; EX_TEMPFAIL); 130 stopped by Ctrl-C.
"""

from __future__ import annotations

import functools
import sys
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


USER_ERRORS = (ConfigError, DataMissingError, OutputError)


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
