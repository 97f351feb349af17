"""Faults that are not bugs, turned into one line and an exit status at the command line.

:func:`report_fault` is the single place the CLI entry points (``baize-tui``,
``baize-convert``) send an exception that is not a :class:`~baize_tui.errors.UserError`:

* a closed pipe (``baize-tui train status RUN | head -3``): quiet, exit 141 like a shell
  reports SIGPIPE, and stdout is pointed at ``/dev/null`` so the final flush stays quiet;
* SIGTERM/SIGHUP (:class:`Terminated`): exit 128 + the signal number;
* the disk full, a read-only file system, a missing permission: the path and the reason;
* a damaged SQLite file that escaped the store boundary.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import pickle
import sqlite3
import sys

#: OS errors that are the environment's fault, not the program's
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
     errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP}
)


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM/SIGHUP (see :mod:`baize_tui.shutdown`).

    A KeyboardInterrupt, so everything that saves on Ctrl-C (a streaming reply, a run's
    state) saves on a polite kill too.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush into a closed pipe is quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def report_fault(prog: str, exc: BaseException) -> int | None:
    """Print one line for ``exc`` and return the exit status, or None: a bug, re-raise it."""
    from baize_tui.safe_write import describe_os_error

    if isinstance(exc, BrokenPipeError):
        silence_stdout()
        return 141
    if isinstance(exc, Terminated):
        import signal

        name = signal.Signals(exc.signum).name
        print(f"{prog}: stopped by {name}", file=sys.stderr)
        return 128 + exc.signum
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        where = exc.filename or "a file"
        print(f"{prog}: error: {describe_os_error(where, exc, 'failed')}", file=sys.stderr)
        return 1
    if isinstance(exc, sqlite3.DatabaseError):
        print(f"{prog}: error: a database failed ({exc}); if it is damaged, restore it from a "
              "backup or move it aside", file=sys.stderr)
        return 1
    if isinstance(exc, pickle.UnpicklingError):
        print(f"{prog}: error: refused to load a pickled file that is not plain tensor data "
              f"({str(exc).splitlines()[0][:200] if str(exc) else 'unpickling refused'}); "
              "use .safetensors weights from a source you trust", file=sys.stderr)
        return 1
    if isinstance(exc, RecursionError):
        print(f"{prog}: error: the input is nested too deeply to read", file=sys.stderr)
        return 1
    return None
