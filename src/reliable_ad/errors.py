"""Errors that are the user's to fix, told apart from the package's own bugs.

A `UserError` says in one line what is wrong in something the user gave (a file, a path, a setting, a server
address) and where; `rad` prints that line and exits with code 1. Any other exception is a bug of the package,
and `rad` prints its traceback with a request to report it. The package's input errors (`DatasetError`,
`ParamsError`, ...) derive from `UserError`; those that callers also catch as a built-in type keep that base.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user gave is wrong or missing; the message says what and where, and how to fix it."""


class InputError(UserError, ValueError):
    """A value the user gave (an option, a setting, a model folder's contents) that the package refuses."""
