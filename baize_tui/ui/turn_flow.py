"""The small parts a streaming turn on the chat screen is made of.

:meth:`ChatScreen._generate <baize_tui.ui.chat_screen.ChatScreen._generate>` composes them so
the turn's flow reads in one screen of code:

- :class:`ThreadBridge` runs the turn (a :class:`~baize_tui.chat.ChatTurn` from the core
  controller) on a plain thread and hands its events to the event loop, waking it only for
  what must be seen at once (the turn starting, its first piece, its end) — no wake-up per
  token, and no widget touched off the loop;
- :class:`SpinClock` paces the spinners (slower once text flows: the text shows progress);
- :class:`GCHold` holds the collector's full passes while the reply streams and lets the held
  pass run shortly after it ends (see gc_pacing.py);
- :class:`ReplyCollapsing` hides earlier messages, and the reply's finished segments, that
  are far above the view while it streams (see collapse.py), and brings them back after.

Error recovery (undoing the views of a turn that never started, giving the text back) stays
on the screen, which owns those widgets.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from baize_tui.ui.collapse import Collapser
from baize_tui.ui.gc_pacing import pacer as gc_pacer

if TYPE_CHECKING:
    from textual.containers import VerticalScroll

    from baize_tui.chat import ChatTurn
    from baize_tui.ui.widgets import MessageView

SPIN_INTERVAL = 0.1
#: Once a reply's text is flowing the text itself shows progress, so the spinners turn more
#: slowly: each turn is a frame of its own.
STREAM_SPIN_INTERVAL = 0.25
#: Seconds after a reply ends before the collector's held-off full pass runs.
GC_AFTER_REPLY = 0.5

Starter = Callable[[threading.Event], "ChatTurn"]
#: (kind, value): ("turn", ChatTurn), ("text", str), ("done", ChatTurn), ("error", exception)
Event = tuple[str, Any]


class ThreadBridge:
    """Runs ``start(cancel)`` and the turn it returns on a worker thread.

    Call :meth:`start` on the event loop; then alternate :meth:`wait` and :meth:`events`.
    Setting :attr:`cancel` stops the turn within a token; :meth:`join` waits for the thread.
    """

    def __init__(self, start: Starter) -> None:
        self.cancel = threading.Event()
        self._start = start
        self._items: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.producer: asyncio.Future[None] | None = None

    def start(self) -> asyncio.Future[None]:
        """Start the thread; returns its future."""
        self._loop = asyncio.get_running_loop()
        self.producer = asyncio.ensure_future(asyncio.to_thread(self._produce))
        return self.producer

    def _put(self, kind: str, value: Any = None, urgent: bool = True) -> None:
        self._items.append((kind, value))
        if urgent and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def _produce(self) -> None:
        try:
            turn = self._start(self.cancel)
            self._put("turn", turn)
            first = True
            for piece in turn:
                self._put("piece", piece, urgent=first)
                first = False
            self._put("done", turn)
        except BaseException as exc:  # travels to the UI side
            self._put("error", exc)

    async def wait(self, timeout: float) -> None:
        """Sleep until something urgent arrives, or ``timeout`` seconds."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()

    def events(self) -> Iterator[Event]:
        """What arrived, in order; runs of pieces come joined as one ``("text", …)``."""
        text: list[str] = []
        while self._items:
            kind, value = self._items.popleft()
            if kind == "piece":
                text.append(value)
                continue
            if text:
                yield "text", "".join(text)
                text.clear()
            yield kind, value
            if kind in ("done", "error"):
                return
        if text:
            yield "text", "".join(text)

    async def join(self) -> None:
        """Wait for the thread to end (it ends within a token once :attr:`cancel` is set)."""
        if self.producer is not None:
            await asyncio.shield(self.producer)


class SpinClock:
    """When the spinners turn next: every :data:`SPIN_INTERVAL`, slower once text flows."""

    def __init__(self) -> None:
        self.interval = SPIN_INTERVAL
        self._last = time.monotonic()

    def due_in(self) -> float:
        """Seconds until the next turn of the spinners (0 when due)."""
        return max(0.0, self._last + self.interval - time.monotonic())

    def take(self) -> bool:
        """True (and restart the clock) when the spinners are due."""
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False

    def streaming(self) -> None:
        """Text is flowing: turn the spinners more slowly."""
        self.interval = STREAM_SPIN_INTERVAL


class GCHold:
    """Holds the collector's full passes while a reply streams (a context manager).

    :meth:`tick` is called right after a write, where a due pass delays no words; on exit the
    held pass runs :data:`GC_AFTER_REPLY` seconds later through ``set_timer``.
    """

    def __init__(self, set_timer: Callable[[float, Callable[[], Any]], Any]) -> None:
        self._set_timer = set_timer

    def __enter__(self) -> GCHold:
        gc_pacer.start()
        return self

    @staticmethod
    def tick() -> None:
        """A moment where a due pass may run."""
        gc_pacer.tick()

    def __exit__(self, *exc_info: object) -> None:
        if gc_pacer.stop():
            # The full pass held off while streaming, once the last words are on screen.
            self._set_timer(GC_AFTER_REPLY, gc_pacer.release)


class ReplyCollapsing:
    """Collapses what is far above the view while ``reply`` streams into ``transcript``.

    :attr:`collapsers` are the screen's to expand when the view moves. :meth:`segment_check`
    asks for a collapse pass when the reply finished a segment; :meth:`done` hands the
    collapsers back to be expanded for good after the frame with the last words.
    """

    def __init__(self, transcript: VerticalScroll, reply: MessageView,
                 schedule: Callable[[Callable[[], Awaitable[None]]], Any],
                 busy: Callable[[], bool]) -> None:
        self.collapsers = [Collapser(transcript, transcript),
                           Collapser(reply.body, transcript, min_collapsed=1)]
        self._reply = reply
        self._schedule = schedule
        self._busy = busy
        self._children = 1  # the reply's segments (and its spacer, once it has one)
        schedule(self.collapse)

    async def collapse(self) -> None:
        """Hide what is far above the view (only while the reply streams)."""
        if self._busy():
            for collapser in self.collapsers:
                await collapser.collapse()

    def segment_check(self) -> None:
        """After a write: a finished segment may now be collapsed."""
        children = len(self._reply.body.children)
        if children != self._children:
            self._children = children
            self._schedule(self.collapse)

    @staticmethod
    async def expand_for_good(collapsers: list[Collapser]) -> None:
        """Bring everything back (after the reply)."""
        for collapser in collapsers:
            await collapser.expand(close=True)
