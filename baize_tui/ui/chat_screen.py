"""The chat screen: sidebar, transcript, prompt box and status line.

The screen is built in layers, each a module with one job:

* :mod:`.chat_base` — the screen's state and widgets, the model's state, layout passes, and
  the conversation shown (open, redraw, context meter);
* :mod:`.chat_turns` — sending a message and streaming the reply: an async worker (group
  ``generate``) drives a plain thread that asks the core
  :class:`~baize_tui.chat_core.ChatController` (shared with ``baize-tui ask``) for the turn
  (see turn_flow.py); Esc stops it and the partial reply is saved as ``cancelled``;
* :mod:`.chat_actions` — edits and branches, F9 and its undo, copy, export, the settings
  (F2), the chat list's actions and the command palette's entries;
* this module — the keys, the layout and what happens when the screen mounts.

The names tests and other modules import from here are re-exported.
"""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Footer, Input, Static

from baize_tui.chat_core import ChatSettings
from baize_tui.ui.chat_actions import ChatActions
from baize_tui.ui.chat_base import AFTER_LAYOUT_AT_MOST, MAX_MOUNTED, ChatScreenBase
from baize_tui.ui.chat_turns import ChatTurns, _screen_message
from baize_tui.ui.live_stats import LiveStats
from baize_tui.ui.sidebar import Sidebar
from baize_tui.ui.status_line import FittedStatusBar
from baize_tui.ui.turn_flow import GC_AFTER_REPLY, SPIN_INTERVAL, STREAM_SPIN_INTERVAL
from baize_tui.ui.widgets import ChatInput, MessageView

__all__ = [
    "AFTER_LAYOUT_AT_MOST",
    "GC_AFTER_REPLY",
    "MAX_MOUNTED",
    "SPIN_INTERVAL",
    "STREAM_SPIN_INTERVAL",
    "ChatActions",
    "ChatScreen",
    "ChatScreenBase",
    "ChatTurns",
    "_screen_message",
]


class ChatScreen(ChatActions):
    """Chat with the loaded model; every conversation is saved in the history store."""

    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("ctrl+t", "edit_last", "Edit last", id="chat.edit_last"),
        Binding("f9", "remove_last_turn", "Remove turn", show=False, id="chat.remove_last_turn"),
        Binding("ctrl+z", "undo_remove", "Undo remove", show=False, priority=True,
                id="chat.undo_remove"),
        Binding("alt+left", "branch(-1)", "Prev branch", show=False, id="chat.branch_prev"),
        Binding("alt+right", "branch(1)", "Next branch", show=False, id="chat.branch_next"),
        Binding("f3", "copy_message", "Copy", show=False, id="chat.copy_message"),
        Binding("f4", "copy_code", "Copy code", show=False, id="chat.copy_code"),
        Binding("ctrl+s", "export", "Save chat as", show=False, id="chat.export"),
        Binding("f2", "settings", "Settings", id="chat.settings"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False, id="chat.toggle_sidebar"),
        # priority: the search box has focus before the next key is handed out
        Binding("ctrl+f", "search", "Search", show=False, priority=True, id="chat.search"),
    ]

    HELP_TITLE = "Chat"
    HELP_ROWS = [
        ("enter", "Send the message", "-"),
        ("shift+enter, ctrl+j", "New line in the message", "-"),
        ("up", "In an empty prompt box: bring back the last message", "-"),
        ("(any letter)", "On a message or the chat list: typed into the prompt box", "-"),
    ]

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-layout"):
            yield Sidebar(self.baize.history, id="sidebar")
            with Vertical(id="chat-main"):
                yield VerticalScroll(id="transcript")
                yield Static("", id="edit-banner", markup=False)
                yield ChatInput(id="prompt")
                yield FittedStatusBar(id="status")
        yield Footer()

    async def on_mount(self) -> None:
        self.transcript.anchor()
        self.watch(self.transcript, "scroll_y", self._transcript_moved, init=False)
        self.settings = ChatSettings.from_config(self.baize.config, self.baize.model_spec)
        self.watch(self.baize, "model_state", self._model_state_changed)
        self.prompt_box.focus()
        self.live_stats = LiveStats(self.status)
        self._fit_sidebar()
        self._spin_timer = self.set_interval(SPIN_INTERVAL, self._spin, pause=True)
        start = self.baize.start_conversation
        if start is None and self.baize.reopen_last:
            start = self.baize.history.last_conversation_id()
        if start is not None:
            await self.open_conversation(start)
        else:
            # Load after the first frame: the screen shows before llama.cpp is even imported.
            settings = self.settings
            self.call_after_refresh(self.baize.ensure_model, settings.model, settings.n_ctx,
                                    settings.lora)

    async def on_resize(self) -> None:
        self._fit_sidebar()
        await self._transcript_moved()

    def _fit_sidebar(self) -> None:
        """Hide the chat list on a narrow terminal, unless Ctrl+B said otherwise."""
        narrow = self.app.size.width < self.NARROW_WIDTH
        shown = self._sidebar_choice if self._sidebar_choice is not None else not narrow
        self.sidebar.set_class(not shown, "hidden")

    # ------------------------------------------------------------------ keys

    def help_sources(self) -> list[tuple[str, Any]]:
        """Bindings F1 lists besides the screen's: a focused message's, the chat list's."""
        return [("Message: ", MessageView.BINDINGS), ("Chat list: ", Sidebar.BINDINGS)]

    def typeahead_target(self, focused: Any) -> Any:
        """Where typing goes when a message, the chat list or nothing has focus: the prompt
        box."""
        if focused is None or isinstance(focused, MessageView):
            return self.prompt_box
        if focused is not None and not isinstance(focused, Input) \
                and self.sidebar in focused.ancestors_with_self:
            return self.prompt_box
        return None
