"""The status line's numbers while a reply streams: tokens, tokens/s, TTFT, context meter.

The streaming loop calls :meth:`LiveStats.update` with the tokens sampled so far (read from
the turn's stats, which the engine thread fills in) as often as it likes; the status line is
redrawn at most :data:`LIVE_HZ` times a second. The rate falls while no token comes, so a
stall shows. :meth:`LiveStats.start` clears the last reply's TTFT and rate first, so the
line never shows a previous reply's numbers as this one's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: How often the live numbers are redrawn, at most (times a second).
LIVE_HZ = 4.0
#: Seconds without a new token before the status line says the model is silent.
STALL_S = 3.0


class LiveStats:
    """Feeds a :class:`~baize_tui.ui.widgets.StatusBar` during one reply."""

    def __init__(self, status: Any, clock: Callable[[], float] = time.monotonic) -> None:
        self.status = status
        self.clock = clock
        self.prompt_tokens = 0
        self.tokens = 0
        self._t0 = clock()
        self._last_draw = 0.0
        self._last_token_at = self._t0
        self.active = False

    def elapsed(self) -> float:
        """Seconds since the reply started."""
        return self.clock() - self._t0

    def start(self, prompt_tokens: int) -> None:
        """A new reply: the prompt's size; no rate or TTFT until this reply has them."""
        self._t0 = self._last_token_at = self.clock()
        self._last_draw = 0.0
        self.prompt_tokens = prompt_tokens
        self.tokens = 0
        self.active = True
        status = self.status
        status.ttft_s = None
        status.tokens_per_s = None
        status.live_tokens = 0
        status.stalled_s = None
        status.used_tokens = prompt_tokens

    def update(self, tokens: int, elapsed: float, ttft_s: float | None = None) -> None:
        """``tokens`` sampled ``elapsed`` seconds after the start (``ttft_s``: when the first
        one came, if known). Redraws at most :data:`LIVE_HZ` times a second."""
        if not self.active:
            return
        now = self.clock()
        if tokens != self.tokens:
            self.tokens = tokens
            self._last_token_at = now
        if now - self._last_draw < 1.0 / LIVE_HZ:
            return
        self._last_draw = now
        status = self.status
        status.live_tokens = tokens
        status.used_tokens = self.prompt_tokens + tokens
        if ttft_s is not None:
            status.ttft_s = ttft_s
        status.tokens_per_s = rate(tokens, elapsed, ttft_s)
        silent = now - self._last_token_at
        status.stalled_s = silent if silent >= STALL_S else None

    def finish(self, completion_tokens: int | None, tokens_per_s: float | None,
               ttft_s: float | None, prompt_tokens: int | None = None) -> None:
        """The reply ended: show its final numbers."""
        self.active = False
        status = self.status
        status.stalled_s = None
        status.live_tokens = completion_tokens
        status.tokens_per_s = tokens_per_s
        status.ttft_s = ttft_s
        status.used_tokens = (prompt_tokens or self.prompt_tokens) + (completion_tokens or 0)


def rate(tokens: int, elapsed: float, ttft_s: float | None) -> float | None:
    """Tokens a second after the first one: ``(tokens - 1) / (elapsed - ttft_s)``; ``None``
    until there are two tokens and time between them."""
    if ttft_s is None or tokens < 2:
        return None
    span = elapsed - ttft_s
    return (tokens - 1) / span if span > 0 else None
