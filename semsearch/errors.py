"""Errors the CLI reports as one line instead of a traceback."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2, nothing lost."""
