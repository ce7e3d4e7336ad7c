"""Errors that the command line turns into a one-line reason and an exit code a scheduler can act on.

Each kind carries its exit code, so a scheduler can tell "fix the input" (2) from "retry later" (75,
EX_TEMPFAIL) from "a job failed" (1). ``exit_code`` is the one mapping from an exception to a code,
used by ``i2i`` and by ``i2i run`` alike.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_TEMPORARY = 75  # EX_TEMPFAIL of sysexits.h
EXIT_INTERRUPTED = 130


class I2IError(Exception):
    """Base of the project's errors; ``exit_code`` is what the command line exits with."""

    exit_code: int = EXIT_FAILURE


class InputError(I2IError):
    """Bad input from the user (a path, a record, an option): the message names the problem. Fix, then rerun."""

    exit_code = EXIT_BAD_INPUT


class TemporaryError(I2IError):
    """A condition that passes by itself (storage unreachable, a lock held by another job): retry later."""

    exit_code = EXIT_TEMPORARY


class Failure(I2IError):
    """A job that failed on valid input (an index version that fails its integrity checks, a crashed stage)."""

    exit_code = EXIT_FAILURE

def exit_code(exc: BaseException) -> int:
    """The process exit code for an exception that ended a command."""
    if isinstance(exc, I2IError):
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return EXIT_FAILURE
