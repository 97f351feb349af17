"""When Python's cycle collector does its full passes while a reply streams.

Textual makes and drops many small objects on every frame (strips, caches, widgets), and a
streaming reply keeps many of them alive for a while. CPython's collector then runs a full
(oldest-generation) pass about once a second, each one 0.1-0.2 s long on a laptop core: a
stalled frame every time, and about a tenth of a core in all. While a reply streams we hold
those passes off and run one ourselves every :data:`FULL_PASS_EVERY` seconds; the young
generations are collected as usual. When the reply ends the usual policy comes back, and one
full pass runs shortly after the last frame, so nothing piles up.
"""

from __future__ import annotations

import gc
import time

#: While replies stream, at most one full collection this often (seconds). A 200 tokens/s
#: reply leaves about 40,000 unreachable cycles (a few MB) to collect per 10 s: holding them
#: for half a minute costs little memory; each pass costs 0.1-0.2 s of a core.
FULL_PASS_EVERY = 30.0
#: A third threshold this high means "never by itself" (the pass is then ours to run).
_NEVER = 1 << 30


class FullCollectionPacer:
    """Holds off the collector's full passes from :meth:`start` until :meth:`release`.

    :meth:`tick` (call it often, e.g. once a frame) runs a full pass when the last one is
    :data:`FULL_PASS_EVERY` seconds old. Starts and stops nest. After the last :meth:`stop`
    the hold stays until :meth:`release` (schedule it for a quiet moment): giving the
    thresholds back at once would start the pending full pass straight away, in the middle
    of drawing the reply's last words.
    """

    def __init__(self, every: float = FULL_PASS_EVERY) -> None:
        self.every = every
        self._depth = 0
        self._saved: tuple[int, ...] | None = None
        self._last_pass = 0.0

    @property
    def holding(self) -> bool:
        """Whether full passes are held off now."""
        return self._saved is not None

    def start(self) -> None:
        if self._saved is None:
            self._saved = gc.get_threshold()
            gc.set_threshold(self._saved[0], self._saved[1], _NEVER)
            self._last_pass = time.monotonic()
        self._depth += 1

    def tick(self) -> None:
        if self._depth and time.monotonic() - self._last_pass >= self.every:
            gc.collect()
            self._last_pass = time.monotonic()

    def stop(self) -> bool:
        """End one hold; True when no other is left (then schedule :meth:`release`)."""
        if self._depth == 0:
            return False
        self._depth -= 1
        return self._depth == 0

    def release(self) -> None:
        """Run the held-off full pass and give the collector its thresholds back, unless a
        new hold started meanwhile."""
        if self._depth == 0 and self._saved is not None:
            gc.collect()
            gc.set_threshold(*self._saved)
            self._saved = None

    def reset(self) -> None:
        """Drop every hold and give the thresholds back (the app is closing)."""
        self._depth = 0
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            self._saved = None


#: The app's one pacer (the collector is process-wide).
pacer = FullCollectionPacer()
