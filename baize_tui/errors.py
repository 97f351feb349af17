"""Errors a user can cause, and how the command line reports them."""

from __future__ import annotations

import sys
from collections.abc import Callable


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


def run_reporting_errors(prog: str, action: Callable[[], int | None], *,
                         interrupted: str = "interrupted") -> int:
    """Run a command's action; a :class:`UserError` becomes one ``prog: error: …`` line on
    stderr and its exit code (credentials redacted), Ctrl-C exit 130, SIGTERM/SIGHUP 128+N;
    environment faults (closed pipe, disk full, read-only) go through
    :func:`baize_tui.faults.report_fault`. Anything else is a bug and keeps its traceback."""
    try:
        code = int(action() or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except UserError as exc:
        from baize_tui.redact import redact_text
        from baize_tui.termtext import term_safe

        # no key in a message, and a quoted value never drives the terminal
        print(f"{prog}: error: {term_safe(redact_text(str(exc)))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        from baize_tui.faults import Terminated, report_fault

        if isinstance(exc, Terminated):
            return report_fault(prog, exc) or 143
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as exc:
        from baize_tui.faults import report_fault

        status = report_fault(prog, exc)
        if status is None:
            raise
        return status
