"""Keep a streaming reply on disk: what was shown is saved within a second, by a timer.

Saving only when the next token arrives loses the last second (or more, on a slow model)
when the process is killed. A :class:`PartialSaver` is told the text shown so far
(:meth:`update`, cheap, from the generating thread) and a small daemon thread writes it
whenever it changed, every :attr:`interval` seconds, however long the next token takes.
:func:`flush_all` writes every live saver's latest text at once; the SIGTERM/SIGHUP handler
(:mod:`baize_tui.shutdown`) calls it before the process ends.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)

#: every saver that has not been closed, for :func:`flush_all`
_live: weakref.WeakSet[PartialSaver] = weakref.WeakSet()


class PartialSaver:
    """Saves the latest text handed to :meth:`update` at most ``interval`` seconds later."""

    def __init__(self, save: Callable[[str], None], interval: float = 0.5) -> None:
        self._save = save
        self.interval = interval
        self._text: str | None = None  # latest text not yet written
        self._lock = threading.Lock()  # guards _text
        self._write_lock = threading.Lock()  # one write at a time, in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _live.add(self)

    def update(self, text: str) -> None:
        """Record the text shown so far; it reaches disk within ``interval`` seconds."""
        with self._lock:
            self._text = text
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._loop, name="partial-saver", daemon=True)
            self._thread.start()

    def flush(self, timeout: float | None = None) -> None:
        """Write the latest text now, if it changed since the last write (``timeout``: give
        up after that many seconds waiting for a write already in progress)."""
        if not self._write_lock.acquire(timeout=-1 if timeout is None else timeout):
            return
        try:
            with self._lock:
                text, self._text = self._text, None
            if text is None:
                return
            try:
                self._save(text)
            except Exception as exc:  # a locked or full database must not stop the reply
                log.warning("could not save the partial reply: %s", exc)
        finally:
            self._write_lock.release()

    def close(self) -> None:
        """Stop the timer (the caller saves the final text itself)."""
        self._stop.set()
        _live.discard(self)
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


def flush_all(timeout: float | None = None) -> None:
    """Write the latest text of every live saver (used on SIGTERM/SIGHUP)."""
    for saver in list(_live):
        saver.flush(timeout)
