"""Errors a user can cause, and how the command line reports them."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad path, wrong option, missing key).

    The CLI prints the message on one line and exits with ``exit_code``
    (2 for usage errors, 1 for failures), never with a traceback.
    """

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class OperationFailed(UserError):
    """Work that could not be completed (network down, disk full, corrupt file)."""

    exit_code = 1
