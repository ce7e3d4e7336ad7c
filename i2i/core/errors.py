"""Errors that the command line turns into a one-line reason and a non-zero exit."""


class InputError(Exception):
    """Bad input from the user (a path, a record, an option): the message names the problem."""

