"""SIGTERM and SIGHUP end a command politely: what was shown is saved first.

:func:`install_termination_handlers` (called once by the CLI entry, in the main thread)
makes both signals flush every streaming reply (:func:`baize_tui.stream_saver.flush_all`)
and then raise :class:`~baize_tui.faults.Terminated` in the main thread. That is a
``KeyboardInterrupt``, so everything that already saves on Ctrl-C (a reply marked
cancelled, a self-chat run's state, the Textual app's clean exit) saves on a kill too; the
CLI then exits with 128 + the signal number.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import CodeType, FrameType
from typing import Any

from baize_tui.faults import Terminated

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


#: code objects of Python functions that C calls back into (llama.cpp's log callback): an
#: exception raised inside one is printed and dropped by ctypes, so the kill would be lost
_FOREIGN_CALLBACKS: set[CodeType] = set()
REDELIVER_S = 0.05


def register_foreign_callback(func: Callable[..., Any]) -> None:
    """Mark ``func`` as called from C: a signal that lands inside it is delivered again a
    moment later, once the C code has returned to Python, instead of being swallowed."""
    _FOREIGN_CALLBACKS.add(func.__code__)


def _inside_foreign_callback(frame: FrameType | None) -> bool:
    while frame is not None:
        if frame.f_code in _FOREIGN_CALLBACKS:
            return True
        frame = frame.f_back
    return False


def _redeliver_later(signum: int) -> None:
    timer = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _flush_then_raise(signum: int, frame: FrameType | None) -> None:
    from baize_tui.stream_saver import flush_all

    if _inside_foreign_callback(frame):  # raising here would be swallowed by ctypes
        _redeliver_later(signum)
        return
    flush_all(timeout=2.0)
    raise Terminated(signum)


def install_termination_handlers(on_signal: Callable[[int], None] | None = None) -> bool:
    """Install the handlers; False (nothing done) outside the main thread.

    With ``on_signal``, the handler flushes and then calls ``on_signal(signum)`` instead of
    raising (the Textual app asks itself to exit, so the terminal is restored).
    """
    if threading.current_thread() is not threading.main_thread():
        return False

    def handler(signum: int, frame: FrameType | None) -> None:
        if on_signal is None:
            _flush_then_raise(signum, frame)
            return
        from baize_tui.stream_saver import flush_all

        flush_all(timeout=2.0)
        on_signal(signum)

    for signum in SIGNALS:
        signal.signal(signum, handler)
    return True


@contextlib.contextmanager
def termination_handlers() -> Iterator[None]:
    """Install the handlers for the block, then put back whatever was there before."""
    before = {signum: signal.getsignal(signum) for signum in SIGNALS}
    installed = install_termination_handlers()
    try:
        yield
    finally:
        if installed:
            for signum, previous in before.items():
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
