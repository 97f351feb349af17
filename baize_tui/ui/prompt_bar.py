"""The widgets under the chat: the prompt box and the status line.

:class:`ChatInput` (Enter sends, Shift+Enter inserts a newline) and :class:`StatusBar` (model,
context meter, live numbers of the reply). Split out of :mod:`baize_tui.ui.widgets`, which
re-exports both.
"""

from __future__ import annotations

from rich.text import Text
from textual import events
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Static, TextArea

from baize_tui.ui.textual_compat import insert_newline

#: Frames of the "working" spinner (the status line's and a streaming message's header).
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class ChatInput(TextArea):
    """The prompt box: Enter sends, Shift+Enter or Ctrl+J inserts a newline, and Up in an
    empty box brings back the last message sent."""

    class Submitted(Message):
        """The user pressed Enter."""

        def __init__(self, chat_input: ChatInput, text: str) -> None:
            super().__init__()
            self.chat_input = chat_input
            self.text = text

    class RecallRequested(Message):
        """Up was pressed in an empty prompt box."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         compact=True, highlight_cursor_line=False)

    async def on_key(self, event: events.Key) -> None:
        # Runs before TextArea's own key handler (Textual calls each class's handler in
        # MRO order); preventing the default skips it. Any other key goes on to it.
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.post_message(self.Submitted(self, self.text))
            return
        if event.key in ("shift+enter", "ctrl+j", "alt+enter"):
            event.stop()
            event.prevent_default()
            insert_newline(self)
            return

    def action_cursor_up(self, select: bool = False) -> None:
        if not self.text and not select:
            self.post_message(self.RecallRequested())
            return
        super().action_cursor_up(select)


class StatusBar(Static):
    """One line under the prompt: model, context meter, last turn's speed, warnings."""

    model_label: reactive[str] = reactive("no model")
    chat_format: reactive[str] = reactive("")  # e.g. "template (auto)", "Baize"
    state: reactive[str] = reactive("")  # loading / generating / stopping / error text
    used_tokens: reactive[int | None] = reactive(None)
    n_ctx: reactive[int] = reactive(0)
    tokens_per_s: reactive[float | None] = reactive(None)
    ttft_s: reactive[float | None] = reactive(None)
    dropped_turns: reactive[int] = reactive(0)
    spinner: reactive[int] = reactive(0)
    #: tokens of the reply being generated (or of the last one); None: not shown
    live_tokens: reactive[int | None] = reactive(None)
    #: seconds since the model's last token, when it has been silent a while
    stalled_s: reactive[float | None] = reactive(None)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)

    def render(self) -> Text:
        out = Text()
        if self.state:
            frame = _SPINNER[self.spinner % len(_SPINNER)] if self.state.endswith("…") else "!"
            out.append(f"{frame} {self.state}", style="bold")
            out.append("  ")
        out.append(self.model_label, style="bold")
        if self.chat_format:
            out.append(f"  format {self.chat_format}")
        if self.n_ctx:
            used = "?" if self.used_tokens is None else str(self.used_tokens)
            out.append(f"  ctx {used}/{self.n_ctx}")
            if self.used_tokens is not None:
                share = self.used_tokens / self.n_ctx
                width = 8
                filled = min(width, round(share * width))
                style = "red" if share > 0.9 else "yellow" if share > 0.7 else "green"
                out.append(" ")
                out.append("█" * filled, style=style)
                out.append("░" * (width - filled), style="dim")
        numbers = []  # this (or the last) reply's: kept short, the line is one row
        if self.live_tokens is not None:
            numbers.append(f"{self.live_tokens} tok")
        if self.tokens_per_s is not None:
            numbers.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.ttft_s is not None:
            numbers.append(f"TTFT {self.ttft_s:.2f}s")
        if numbers:
            out.append("  " + " · ".join(numbers))
        if self.stalled_s is not None:
            out.append(f"  no token for {self.stalled_s:.0f} s", style="bold yellow")
        if self.dropped_turns:
            out.append(
                f"  ⚠ {self.dropped_turns} old turn{'s' if self.dropped_turns != 1 else ''} "
                "left out to fit the context",
                style="bold yellow",
            )
        return out
