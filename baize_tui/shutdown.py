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
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

from baize_tui.faults import Terminated

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _flush_then_raise(signum: int, frame: FrameType | None) -> None:
    from baize_tui.stream_saver import flush_all

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
