"""The boundary's errors: what a caller gave wrong, as distinct from a bug in the package.

``BadValue`` and ``BadType`` are a ``ValueError`` and a ``TypeError`` (code that catches those keeps
working) and a ``BadInput``, which the command line reports in one line with exit code 2; any other
exception is a bug, reported with its traceback and exit code 1. Imports nothing.
"""
from __future__ import annotations

__all__ = ["BadInput", "BadValue", "BadType"]


class BadInput(Exception):
    """An error in what the caller gave (an argument, a file, a config), found at a boundary. The command
    line reports it in one line with exit code 2; any other exception is a bug in the package."""


class BadValue(BadInput, ValueError):
    """A value of the right kind that is out of range, malformed or inconsistent."""


class BadType(BadInput, TypeError):
    """A value of the wrong kind (a string or a boolean where a number belongs ...)."""
