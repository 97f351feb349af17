"""Helpers for the UI tests: a scripted engine (the slow neighbour used for cancel tests), a
poller, and an app factory over an isolated history."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from baize_tui.engines.base import Generation, SamplingParams, TurnStats

if TYPE_CHECKING:  # the chat tests use this module too; they need not import Textual
    from baize_tui.ui.app import BaizeApp
    from baize_tui.ui.chat_screen import ChatScreen


class ScriptedEngine:
    """Yields a fixed list of pieces, ``delay`` seconds apart, honouring ``cancel``.

    With ``gate`` given, the stream stops after ``gate_after`` pieces until the test sets the
    gate (or the turn is cancelled), so a test can look at the screen mid-reply however slow
    the machine is."""

    takes_messages = False

    def __init__(self, pieces: Sequence[str], delay: float = 0.0, n_ctx: int = 2048,
                 spec: str = "scripted", gate: threading.Event | None = None,
                 gate_after: int = 0) -> None:
        self.pieces = list(pieces)
        self.delay = delay
        self.gate = gate
        self.gate_after = gate_after
        self._n_ctx = n_ctx
        self.spec = spec
        self.prompts: list[str] = []
        self.params: list[SamplingParams] = []
        self.closed = False

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def describe(self) -> str:
        return f"scripted ({len(self.pieces)} pieces)"

    def close(self) -> None:
        self.closed = True

    def stream(self, prompt: Any, params: SamplingParams,
               cancel: threading.Event | None = None, *, stop: Sequence[str] = ()) -> Generation:
        self.prompts.append(prompt)
        self.params.append(params)
        stats = TurnStats(prompt_tokens=self.count_tokens(prompt))
        cancel = cancel or threading.Event()

        def pieces() -> Iterator[str]:
            for n, piece in enumerate(self.pieces[: params.max_new_tokens]):
                if self.gate is not None and n == self.gate_after:
                    while not (self.gate.wait(0.01) or cancel.is_set()):
                        pass
                if cancel.is_set():
                    stats.finish_reason = "cancelled"
                    return
                if self.delay:
                    time.sleep(self.delay)
                stats.completion_tokens = n + 1
                yield piece
            stats.finish_reason = "length" if len(self.pieces) > params.max_new_tokens else "stop"

        return Generation(pieces(), stats)


async def wait_until(pilot: Any, predicate: Callable[[], bool], timeout: float = 20.0,
                     what: str = "condition", why: Callable[[], str] | None = None) -> None:
    """Let the app run until ``predicate()`` is true; fail after ``timeout`` seconds, saying
    what was awaited and (``why``) what the screen showed then."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = f"; {why()}" if why is not None else ""
            raise AssertionError(f"timed out waiting for {what}{detail}")
        await pilot.pause(0.02)
    await asyncio.sleep(0)


def _screen_pending(pilot: Any) -> bool:
    """Whether the current screen still has a layout, scroll, repaint or callback queued."""
    screen = pilot.app.screen
    return bool(getattr(screen, "_layout_required", False)
                or getattr(screen, "_scroll_required", False)
                or getattr(screen, "_repaint_required", False)
                or getattr(screen, "_dirty_widgets", None)
                or getattr(screen, "_callbacks", None))


async def settled(pilot: Any, timeout: float = 20.0) -> None:
    """Wait until the app has handled every message sent so far and the screen has drawn the
    frame for it: no layout, scroll, repaint or after-refresh callback left pending, twice in
    a row (a frame can queue work of its own). Use instead of a fixed ``pilot.pause(0.3)``
    where the awaited condition is "what was done so far is on the screen"."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2:
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the screen to settle")
        await pilot.pause()  # messages handled, then the pending frame drawn
        quiet = 0 if _screen_pending(pilot) else quiet + 1


async def press_effect_over(pilot: Any, selector: str, timeout: float = 20.0) -> None:
    """Wait until the button ``selector`` can be clicked again: Textual ignores a click while
    the button shows its press effect (the ``-active`` class, 0.2 s after the last press)."""
    button = pilot.app.screen.query_one(selector)
    await wait_until(pilot, lambda: not button.has_class("-active"), timeout=timeout,
                     what=f"the press effect of {selector} to end")


def scripted_app(engine: ScriptedEngine, **kwargs: object) -> BaizeApp:
    """An app whose model is the scripted engine."""
    from baize_tui.ui.app import BaizeApp

    return BaizeApp(model="scripted", engine_factory=lambda spec, config, n_ctx: engine,
                    **kwargs)  # type: ignore[arg-type]


async def ready(pilot: Any, app: BaizeApp) -> ChatScreen:
    """Wait for the model to load; the chat screen it is shown on."""
    from baize_tui.ui.chat_screen import ChatScreen

    await wait_until(pilot, lambda: app.model_state == "ready", what="model loaded")
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


async def send(pilot: Any, screen: ChatScreen, text: str) -> None:
    """Type ``text`` in the prompt box, press Enter and wait for the whole reply."""
    before = screen.last_turn
    screen.prompt_box.focus()
    screen.prompt_box.text = text
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.last_turn is not before and not screen.busy,
                     what="the reply")
