"""The one command-line parser of every ``i2i`` subcommand and the argument types they share.

A parse error raises ``InputError`` instead of exiting, so the ``i2i`` dispatcher prints it as
one line and exits 2, the same for every subcommand.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable

from i2i.core.errors import InputError


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises InputError (one line, exit 2 through the dispatcher) instead of exiting.

    Subparsers made with ``add_subparsers()`` are of this class too.
    """

    def add_subparsers(self, **kwargs):  # type: ignore[override]
        kwargs.setdefault("parser_class", type(self))
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(message)


def int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse type for integers >= ``minimum``; ``what`` names the bound in the error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what} (must be at least {minimum}), got {text}")
        return value
    return parse


positive_int = int_at_least(1, "a positive integer")
non_negative_int = int_at_least(0, "a non-negative integer")


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value
