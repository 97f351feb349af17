"""The chat screen's base: its state, widgets, model state, layout passes and the
conversation shown (opening one, redrawing its thread, the context meter).

:class:`ChatScreenBase` is what the chat screen's parts build on: turns
(:mod:`.chat_turns`), actions on messages, chats and settings (:mod:`.chat_actions`) and the
screen itself (:mod:`.chat_screen`: keys, layout, mounting).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from baize_tui.chat import ChatTurn
from baize_tui.chat_core import ChatController, ChatSettings
from baize_tui.chat_format import ResolvedFormat
from baize_tui.errors import UserError
from baize_tui.history import Message
from baize_tui.ui.collapse import Collapser
from baize_tui.ui.live_stats import LiveStats
from baize_tui.ui.sidebar import Sidebar
from baize_tui.ui.status_line import FittedStatusBar
from baize_tui.ui.textual_compat import OneLayoutPass, install_reflow_compositor
from baize_tui.ui.turn_undo import TurnUndo
from baize_tui.ui.widgets import ChatInput, MessageInfo, MessageView

if TYPE_CHECKING:
    from baize_tui.ui.app import BaizeApp

log = logging.getLogger("baize_tui.ui")

#: At most this many messages of a thread are mounted (the newest).
MAX_MOUNTED = 200
#: :meth:`ChatScreen.call_after_layout` runs its callbacks after at most this many seconds
#: even when no layout pass comes.
AFTER_LAYOUT_AT_MOST = 0.5


def _info(message: Message, branch: tuple[int, int] | None) -> MessageInfo:
    return MessageInfo(
        message_id=message.id,
        branch=branch,
        finish_reason=message.finish_reason,
        interrupted=message.interrupted,
        completion_tokens=message.completion_tokens,
        tokens_per_s=message.tokens_per_s,
        ttft_s=message.ttft_s,
    )


class ChatScreenBase(OneLayoutPass, Screen[None]):
    """The chat screen's state and the conversation it shows (see the module docstring)."""

    #: Below this many columns the chat list hides itself (Ctrl+B shows it).
    NARROW_WIDTH = 100

    def __init__(self) -> None:
        super().__init__(id="chat")
        self.live_stats: LiveStats | None = None
        self.undo = TurnUndo()
        self._sidebar_choice: bool | None = None  # Ctrl+B's last word: shown or hidden
        install_reflow_compositor(self)  # see textual_compat.py
        self.conversation_id: int | None = None
        self.settings: ChatSettings | None = None
        self.busy = False
        self.last_turn: ChatTurn | None = None
        self._cancel: threading.Event | None = None
        self._editing: Message | None = None
        self._last_sent = ""
        self._spin_timer: Any = None
        # While a reply is generated its worker turns the status spinner together with the
        # reply's own, so both land in one frame.
        self._spinning_in_worker = False
        # While a reply streams: hide earlier messages, and the reply's finished segments,
        # that are far above the view (see collapse.py).
        self._collapsers: list[Collapser] = []
        self._after_layout: list[Callable[[], Any]] = []
        # The core chat controller (shared with `ask`) for the loaded engine: it resolves the
        # chat format and drives each turn, keeping the prompt's start (and llama.cpp's KV
        # cache) stable per conversation.
        self._controller: ChatController | None = None
        self._assistant_name = "Baize"

    @property
    def baize(self) -> BaizeApp:
        """The app, typed."""
        return self.app  # type: ignore[return-value]

    def controller(self) -> ChatController:
        """The chat controller for the loaded engine (a new one when the model changed)."""
        engine = self.baize.engine
        assert engine is not None
        if self._controller is None or self._controller.engine is not engine:
            self._controller = ChatController(engine, self.baize.history)
        return self._controller

    def chat_format(self) -> ResolvedFormat | None:
        """The chat format this chat's settings give on the loaded model (``None``: no model,
        or its template cannot be used — the message says why when sending)."""
        if self.baize.engine is None or self.baize.model_state != "ready":
            return None
        try:
            return self.controller().resolved(self.settings or ChatSettings())
        except UserError:
            return None

    # ------------------------------------------------------------------ layout

    def layout_pass_done(self) -> None:
        # One pass per write (OneLayoutPass, see textual_compat.py); then what waited for it.
        if self._after_layout:
            self._run_after_layout()

    def call_after_layout(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback(*args)`` once the next layout pass has drawn the screen.

        Unlike ``call_after_refresh``, whose callbacks also run on a frame that a batch
        update held back (so before the layout that is pending), this waits for the pass
        itself; if none comes within :data:`AFTER_LAYOUT_AT_MOST` seconds it runs anyway.
        """
        self._after_layout.append(partial(callback, *args))
        self.set_timer(AFTER_LAYOUT_AT_MOST, self._run_after_layout)

    def _run_after_layout(self) -> None:
        callbacks, self._after_layout = self._after_layout, []
        for callback in callbacks:
            self.call_next(callback)

    @property
    def transcript(self) -> VerticalScroll:
        """The scrolling message list."""
        return self.query_one("#transcript", VerticalScroll)

    @property
    def prompt_box(self) -> ChatInput:
        """The text box the user types into."""
        return self.query_one("#prompt", ChatInput)

    @property
    def status(self) -> FittedStatusBar:
        """The status line."""
        return self.query_one("#status", FittedStatusBar)

    @property
    def sidebar(self) -> Sidebar:
        """The conversation list."""
        return self.query_one("#sidebar", Sidebar)

    # ------------------------------------------------------------------ model state

    def _model_state_changed(self, state: str) -> None:
        app = self.baize
        status = self.status
        status.model_label = app.model_label
        status.lora = Path(app.model_lora).name if app.model_lora else ""
        self._show_format(announce=state == "ready")
        status.n_ctx = app.engine.n_ctx if app.engine is not None else 0
        if state == "loading":
            self._set_state("loading model…")
        elif state == "error":
            self._set_state(f"model failed: {app.model_error}")
        elif not self.busy:
            self._set_state("")

    def _show_format(self, *, announce: bool = False) -> None:
        """Show the chat format in the status line (and, once per model, why it was a
        guess); name replies after the model unless it speaks Baize's format."""
        resolved = self.chat_format()
        # Baize's own format on a Baize model is the app's normal case: the line stays as
        # short as before; any other format (or a guess) is named.
        plain = resolved is None or (resolved.name == "baize" and resolved.choice == "auto"
                                     and resolved.notice is None)
        self.status.chat_format = "" if plain else resolved.label  # type: ignore[union-attr]
        name = "Baize"
        if resolved is not None and resolved.name != "baize":
            info = getattr(self.baize.engine, "chat_info", None)
            name = (info().name if callable(info) else "") or "Assistant"
        self._assistant_name = name
        for view in self._views():
            if view.role == "assistant" and view.assistant_name != name:
                view.assistant_name = name
                view.refresh_header()
        if announce and resolved is not None and resolved.notice:
            self.notify(resolved.notice, severity="warning", timeout=8)

    def _reply_view(self) -> MessageView:
        view = MessageView("assistant")
        view.assistant_name = self._assistant_name
        return view

    def _set_state(self, state: str) -> None:
        self.status.state = state
        if self._spin_timer is not None:
            if state.endswith("…"):
                self._spin_timer.resume()
            else:
                self._spin_timer.pause()

    async def _transcript_moved(self) -> None:
        for collapser in self._collapsers:
            if collapser.should_expand():
                await collapser.expand()

    def _spin(self) -> None:
        if not self._spinning_in_worker:
            self.status.spinner += 1

    # ------------------------------------------------------------------ conversations

    async def open_conversation(self, conversation_id: int | None) -> None:
        """Show a saved conversation (``None``: a new, empty chat)."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        self._end_edit()
        history = self.baize.history
        self.conversation_id = conversation_id
        self.last_turn = None
        if conversation_id is None:
            self.settings = ChatSettings.from_config(self.baize.config, self.baize.model_spec)
        else:
            conv = history.get_conversation(conversation_id)
            self.settings = self._lora_still_there(ChatSettings.from_conversation(
                conv.model or self.baize.model_spec, conv.system_prompt, conv.params
            ))
        self.status.dropped_turns = 0
        self.status.tokens_per_s = None
        self.status.ttft_s = None
        await self.reload_transcript()
        self.sidebar.set_current(conversation_id)
        self._show_format()
        self.baize.ensure_model(self.settings.model, self.settings.n_ctx, self.settings.lora)

    def _lora_still_there(self, settings: ChatSettings) -> ChatSettings:
        """The settings of a reopened chat, without its LoRA adapter if the file is gone
        (saying so: the chat goes on with the base model until F2 names another)."""
        if settings.lora and not Path(settings.lora).expanduser().is_file():
            self.notify(f"This chat used the LoRA adapter {settings.lora}, which is gone; "
                        "it goes on with the base model. Choose another adapter in the chat "
                        "settings (F2).", title="LoRA adapter missing", severity="warning",
                        timeout=10)
            return replace(settings, lora=None)
        return settings

    async def reload_transcript(self, focus_message: int | None = None) -> None:
        """Redraw the shown thread from history (after a branch switch, an edit, a delete)."""
        history = self.baize.history
        thread = [] if self.conversation_id is None else history.thread(self.conversation_id)
        shown = thread[-MAX_MOUNTED:]
        views = []
        for message in shown:
            siblings = [m.id for m in history.siblings(message.id)]
            branch = (siblings.index(message.id) + 1, len(siblings)) if len(siblings) > 1 else None
            view = MessageView(message.role, message.text, _info(message, branch))
            view.assistant_name = self._assistant_name
            views.append(view)
        for collapser in self._collapsers:
            collapser.forget()
        with self.app.batch_update():
            await self.transcript.remove_children()
            if len(thread) > len(shown):
                await self.transcript.mount(Static(
                    f"({len(thread) - len(shown)} earlier messages not shown; export the chat "
                    "to read them all)", classes="earlier", markup=False))
            await self.transcript.mount_all(views)
        self.transcript.scroll_end(animate=False)
        self._update_context_meter(thread)
        if focus_message is not None:
            for view in views:
                if view.info.message_id == focus_message:
                    view.focus()
                    break

    def _update_context_meter(self, thread: list[Message]) -> None:
        for message in reversed(thread):
            if message.role == "assistant" and message.prompt_tokens:
                self.status.used_tokens = message.prompt_tokens + (message.completion_tokens or 0)
                self.status.tokens_per_s = message.tokens_per_s
                self.status.ttft_s = message.ttft_s
                self.status.live_tokens = message.completion_tokens
                return
        self.status.used_tokens = None
        self.status.tokens_per_s = self.status.ttft_s = self.status.live_tokens = None

    def _views(self) -> list[MessageView]:
        return list(self.transcript.query(MessageView))

    def _target_view(self, role: str | None = "assistant") -> MessageView | None:
        """The focused message, else the last one (of ``role``)."""
        focused = self.focused
        if isinstance(focused, MessageView):
            return focused
        for view in reversed(self._views()):
            if role is None or view.role == role:
                return view
        return None

    def _last_message(self, role: str) -> Message | None:
        if self.conversation_id is None:
            return None
        for message in reversed(self.baize.history.thread(self.conversation_id)):
            if message.role == role:
                return message
        return None

    def _end_edit(self) -> None:
        self._editing = None
        try:
            self.query_one("#edit-banner", Static).remove_class("visible")
        except Exception:
            pass
