"""The chat screen: sidebar, transcript, prompt box and status line.

A turn runs like this: the screen mounts the user's message and an empty reply, then an async
worker (group ``generate``) starts a plain thread that asks the core
:class:`~baize_tui.chat_core.ChatController` (shared with ``baize-tui ask``) for the turn — it
resolves the chat format, saves the user message, fits the prompt, streams from the engine and
saves the reply, with partial saves while it streams — and hands each visible piece to the
event loop (see turn_flow.py for the parts the worker is made of). Generation never waits on drawing, and no widget is touched off the
loop. Esc sets the turn's cancel event; the engine stops at the next token and the partial
reply is saved as ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Input, Static

from baize_tui.chat import ChatTurn
from baize_tui.chat_core import ChatController, ChatSettings
from baize_tui.chat_format import ResolvedFormat
from baize_tui.errors import UserError
from baize_tui.history import Message, NotFoundError
from baize_tui.ui.collapse import Collapser
from baize_tui.ui.live_stats import LiveStats
from baize_tui.ui.screens import ConfirmScreen, PromptScreen, SettingsScreen
from baize_tui.ui.sidebar import Sidebar
from baize_tui.ui.status_line import FittedStatusBar
from baize_tui.ui.textual_compat import OneLayoutPass, install_reflow_compositor
from baize_tui.ui.turn_flow import (  # noqa: F401  (constants re-exported for tests)
    GC_AFTER_REPLY,
    SPIN_INTERVAL,
    STREAM_SPIN_INTERVAL,
    GCHold,
    ReplyCollapsing,
    SpinClock,
    Starter,
    ThreadBridge,
)
from baize_tui.ui.turn_undo import UNDO_S, TurnUndo
from baize_tui.ui.widgets import ChatInput, MessageInfo, MessageView, code_blocks

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


def _screen_message(exc: BaseException) -> str:
    """What to tell the user on this screen, naming the settings they can change here (the
    command line's messages name its flags)."""
    from baize_tui.prompt import ContextOverflow

    if isinstance(exc, ContextOverflow):
        return (f"Input too long: the prompt needs {exc.prompt_tokens} tokens plus "
                f"{exc.reserved} reserved for the reply, but the context holds {exc.available}. "
                "Shorten the message or the system prompt, or lower Max new tokens (or raise "
                "the Context size) in the chat settings (F2).")
    text = str(exc) or type(exc).__name__
    return text.replace("--format baize, or Format in the chat settings, F2",
                        "Format in the chat settings, F2")


class ChatScreen(OneLayoutPass, Screen[None]):
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

    def compose(self) -> ComposeResult:
        with Horizontal(id="chat-layout"):
            yield Sidebar(self.baize.history, id="sidebar")
            with Vertical(id="chat-main"):
                yield VerticalScroll(id="transcript")
                yield Static("", id="edit-banner", markup=False)
                yield ChatInput(id="prompt")
                yield FittedStatusBar(id="status")
        yield Footer()

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

    # ------------------------------------------------------------------ sending

    @on(ChatInput.Submitted)
    async def _submitted(self, event: ChatInput.Submitted) -> None:
        text = event.text.strip()
        if not text:
            return
        await self.send(text, typed=event.text)

    @on(ChatInput.RecallRequested)
    def _recall(self) -> None:
        text = self._last_sent
        if not text:
            last = self._last_message("user")
            text = last.text if last is not None else ""
        if text:
            self.prompt_box.text = text
            self.prompt_box.move_cursor(self.prompt_box.document.end)

    def _ready(self) -> bool:
        if self.busy:
            self.notify("Still generating; press Esc to stop.", severity="warning")
            return False
        state = self.baize.model_state
        if state != "ready":
            message = {
                "loading": "The model is still loading…",
                "error": f"The model did not load: {self.baize.model_error}. "
                         "Fix it in the settings (F2).",
            }.get(state, "No model: choose one in the settings (F2).")
            self.notify(message, severity="warning")
            return False
        return True

    async def send(self, text: str, *, typed: str | None = None) -> None:
        """Send ``text`` as a new message (or as the edited version of the last one).

        ``typed`` is what the prompt box held; it is given back if nothing could be sent.
        """
        if not self._ready():
            return
        settings = self.settings or ChatSettings()
        editing = self._editing
        conversation_id = self.conversation_id
        self.prompt_box.clear()
        self._last_sent = text
        self._end_edit()

        if editing is not None:
            # Drop the edited message (and what follows) from view; it stays as a branch.
            views = self._views()
            for index, view in enumerate(views):
                if view.info.message_id == editing.id:
                    for old in views[index:]:
                        await old.remove()
                    break

        controller = self.controller()

        def start(cancel: threading.Event) -> ChatTurn:
            return controller.send(settings, text, cancel, conversation_id=conversation_id,
                                   editing=editing)

        self.busy = True  # until the worker ends (a second Enter must not send twice)
        user_view = MessageView("user", text)
        reply_view = self._reply_view()
        await self.transcript.mount_all([user_view, reply_view])
        self.transcript.scroll_end(animate=False)
        self._generate(start, reply_view, user_view, typed if typed is not None else text)

    @work(exclusive=True, group="generate")
    async def _generate(self, start: Starter, reply: MessageView, user: MessageView | None,
                        restore: str | None) -> None:
        """Run one turn: a thread produces pieces (see turn_flow.py), this worker draws them."""
        bridge = ThreadBridge(start)
        running = (bridge.cancel, bridge.start())
        self._cancel = bridge.cancel
        self.busy = True
        self._set_state("generating…")
        self.baize.running_turns.add(running)
        reply.start_stream()
        collapsing = ReplyCollapsing(self.transcript, reply, self.call_after_refresh,
                                     lambda: self.busy)
        self._collapsers = collapsing.collapsers
        spinner = SpinClock()
        self._spinning_in_worker = True  # the status spinner turns with the reply's
        turn: ChatTurn | None = None
        try:
            with GCHold(self.app.set_timer) as gc_hold:
                ended = False
                while not ended:
                    wait = reply.next_write_in()
                    await bridge.wait(spinner.due_in() if wait is None
                                      else min(wait, spinner.due_in()))
                    wrote = False
                    for kind, value in bridge.events():
                        if kind == "text":
                            await self._feed(reply, turn, value)
                            wrote = True
                        elif kind == "turn":
                            turn = value
                            self._turn_started(value, reply, user)
                        elif kind == "done":
                            await self._turn_finished(value, reply)
                            ended = True
                        else:
                            await self._turn_failed(value, turn, reply, user, restore)
                            ended = True
                    if ended:
                        break
                    if wrote:
                        spinner.streaming()
                    else:
                        await reply.flush()
                    self._live_tick(turn)
                    if spinner.take():
                        reply.spin()
                        self.status.spinner += 1
                    if reply.next_write_in() is None:  # right after a write
                        gc_hold.tick()
                        collapsing.segment_check()
        finally:
            await self._end_turn(bridge, running, reply, collapsing)

    async def _end_turn(self, bridge: ThreadBridge, running: Any, reply: MessageView,
                        collapsing: ReplyCollapsing) -> None:
        """Settle the screen after a turn, however it ended."""
        self._spinning_in_worker = False
        # After the frame with the last words (bringing everything back costs a layout).
        self._collapsers = []
        self.call_after_layout(collapsing.expand_for_good, collapsing.collapsers)
        bridge.cancel.set()
        if reply.streaming and reply.is_mounted:
            try:
                await reply.finish_stream()
            except Exception:  # e.g. the app is closing and the view is gone
                log.debug("could not settle the reply view", exc_info=True)
        try:
            await bridge.join()
        finally:
            self.baize.running_turns.discard(running)
        self.busy = False
        self._cancel = None
        try:
            self._model_state_changed(self.baize.model_state)
        except NoMatches:  # the app is closing mid-reply: the status line is already gone
            log.debug("status line gone while a reply ended", exc_info=True)

    def _live_tick(self, turn: ChatTurn | None) -> None:
        """Hand the status line this reply's numbers so far (see live_stats.py)."""
        if turn is not None and self.live_stats is not None:
            self.live_stats.update(turn.stats.completion_tokens, self.live_stats.elapsed(),
                                   turn.stats.ttft_s)

    @staticmethod
    async def _feed(reply: MessageView, turn: ChatTurn | None, text: str) -> None:
        if turn is not None and reply.info.message_id is None:
            # The reply row is written when the turn's first piece is pulled, which may be
            # after the "turn" event was handled.
            reply.info.message_id = turn.reply_message_id
        await reply.feed(text)

    def _turn_started(self, turn: ChatTurn, reply: MessageView, user: MessageView | None) -> None:
        if self.live_stats is not None:
            self.live_stats.start(turn.prepared.prompt_tokens)
        if user is not None:
            user.info.message_id = turn.user_message_id
            self._mark_branch(user)
        reply.info.message_id = turn.reply_message_id
        if self.conversation_id is None and turn.user_message_id is not None:
            self.conversation_id = self.baize.history.get_message(
                turn.user_message_id).conversation_id
            self.sidebar.set_current(self.conversation_id)
        self.status.dropped_turns = turn.dropped_turns
        self.sidebar.reload()

    def _mark_branch(self, view: MessageView) -> None:
        """Show ``‹ n/m ›`` on a new message that has siblings (an edit makes a branch)."""
        if view.info.message_id is None:
            return
        siblings = [m.id for m in self.baize.history.siblings(view.info.message_id)]
        if len(siblings) > 1:
            view.info.branch = (siblings.index(view.info.message_id) + 1, len(siblings))
            view.refresh_header()

    async def _turn_finished(self, turn: ChatTurn, reply: MessageView) -> None:
        self.last_turn = turn
        await reply.finish_stream(turn.text)
        stats = turn.stats
        reply.info.message_id = turn.reply_message_id
        reply.info.finish_reason = stats.finish_reason
        reply.info.completion_tokens = stats.completion_tokens
        reply.info.tokens_per_s = stats.tokens_per_s
        reply.info.ttft_s = stats.ttft_s
        if turn.reply_message_id is not None:
            siblings = [m.id for m in self.baize.history.siblings(turn.reply_message_id)]
            if len(siblings) > 1:
                reply.info.branch = (siblings.index(turn.reply_message_id) + 1, len(siblings))
        reply.refresh_header()
        if self.live_stats is not None:
            self.live_stats.finish(stats.completion_tokens, stats.tokens_per_s, stats.ttft_s,
                                   stats.prompt_tokens or turn.prepared.prompt_tokens)
        if stats.finish_reason == "error":
            self.notify(f"Generation failed: {stats.error}", severity="error", timeout=8)
        # The turn ends (busy goes off) once the chat list shows it.
        try:
            await self.sidebar.reload()
        except Exception:  # e.g. the app is closing and the list is gone
            log.debug("could not reload the chat list after a turn", exc_info=True)

    async def _turn_failed(self, exc: BaseException, turn: ChatTurn | None, reply: MessageView,
                           user: MessageView | None, restore: str | None) -> None:
        log.warning("turn failed: %s", exc, exc_info=exc)
        await reply.finish_stream()
        if turn is None:
            # Nothing was saved (e.g. the message does not fit the context): undo the views
            # and give the text back.
            await reply.remove()
            if user is not None:
                await user.remove()
            if restore and not self.prompt_box.text:
                self.prompt_box.text = restore
        else:
            reply.info.finish_reason = "error"
            reply.refresh_header()
        self.notify(_screen_message(exc), title="Could not generate",
                    severity="error", timeout=10)
        self.sidebar.reload()

    # ------------------------------------------------------------------ actions

    def action_stop(self) -> None:
        """Stop the reply being generated (the partial reply is kept, marked stopped)."""
        if self._cancel is not None and not self._cancel.is_set():
            self._cancel.set()
            self._set_state("stopping…")
        elif self._editing is not None:
            self._end_edit()
            self.prompt_box.clear()
        elif isinstance(self.focused, MessageView):
            self.prompt_box.focus()

    async def action_new_chat(self) -> None:
        """Start a new, empty conversation."""
        await self.open_conversation(None)
        self.prompt_box.focus()

    def _last_message(self, role: str) -> Message | None:
        if self.conversation_id is None:
            return None
        for message in reversed(self.baize.history.thread(self.conversation_id)):
            if message.role == role:
                return message
        return None

    async def action_regenerate(self) -> None:
        """Generate a new reply to the last message; the old one stays as a branch."""
        if self.conversation_id is None:
            self.notify("Nothing to regenerate yet.", severity="warning")
            return
        if not self._ready():
            return
        thread = self.baize.history.thread(self.conversation_id)
        if not thread:
            self.notify("Nothing to regenerate yet.", severity="warning")
            return
        conversation_id = self.conversation_id
        settings = self.settings or ChatSettings()
        views = self._views()
        if thread[-1].role == "assistant" and views and views[-1].role == "assistant":
            await views[-1].remove()
        reply_view = self._reply_view()
        await self.transcript.mount(reply_view)
        self.transcript.scroll_end(animate=False)

        controller = self.controller()

        def start(cancel: threading.Event) -> ChatTurn:
            return controller.regenerate(settings, conversation_id, cancel)

        self._generate(start, reply_view, None, None)

    def action_edit_last(self) -> None:
        """Put the last user message back in the prompt box; sending it makes a new branch."""
        message = self._last_message("user")
        if message is None:
            self.notify("No message to edit.", severity="warning")
            return
        self.edit_message(message, last=True)

    @on(MessageView.EditRequested)
    def _edit_requested(self, event: MessageView.EditRequested) -> None:
        view = event.view
        if view.info.message_id is None:
            return
        if view.role != "user":
            self.notify("Only your own messages can be edited (e on one of them).",
                        severity="warning")
            return
        self.edit_message(self.baize.history.get_message(view.info.message_id))

    def edit_message(self, message: Message, *, last: bool = False) -> None:
        """Put ``message`` (a user message, any in the thread) in the prompt box; sending it
        makes a new branch from there."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        self._editing = message
        banner = self.query_one("#edit-banner", Static)
        what = "your last message" if last else "an earlier message"
        banner.update(f"Editing {what}: Enter sends it as a new branch, Esc cancels.")
        banner.add_class("visible")
        self.prompt_box.text = message.text
        self.prompt_box.move_cursor(self.prompt_box.document.end)
        self.prompt_box.focus()

    def _end_edit(self) -> None:
        self._editing = None
        try:
            self.query_one("#edit-banner", Static).remove_class("visible")
        except Exception:
            pass

    async def action_remove_last_turn(self) -> None:
        """Delete the last exchange (the user message and its replies) from this branch."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        message = self._last_message("user")
        if message is None:
            self.notify("Nothing to remove.", severity="warning")
            return
        assert self.conversation_id is not None
        self.undo.remove(self.baize.history, self.conversation_id, message.id)
        await self.reload_transcript()
        self.sidebar.reload()
        self.notify("Removed the last turn. Ctrl+Z puts it back.", title="Removed",
                    timeout=UNDO_S)
        self.set_timer(UNDO_S, self.undo.forget)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "undo_remove":  # Ctrl+Z is the text box's own undo otherwise
            return self.undo.last is not None
        return True

    async def action_undo_remove(self) -> None:
        """Put back the turn F9 removed."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        conversation_id = self.undo.restore(self.baize.history)
        if conversation_id is None:
            return
        if conversation_id == self.conversation_id:
            await self.reload_transcript()
        self.sidebar.reload()
        self.notify("Turn restored.", timeout=3)

    async def action_branch(self, step: int) -> None:
        """Show the previous (-1) or next (+1) branch at the focused (or last) message."""
        view = self._target_view(role=None)
        if view is not None:
            await self._switch_branch(view, step)

    @on(MessageView.BranchRequested)
    async def _branch_requested(self, event: MessageView.BranchRequested) -> None:
        await self._switch_branch(event.view, event.step)

    async def _switch_branch(self, view: MessageView, step: int) -> None:
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        if view.info.message_id is None:
            return
        history = self.baize.history
        ids = [m.id for m in history.siblings(view.info.message_id)]
        index = ids.index(view.info.message_id) + step
        if len(ids) < 2 or not 0 <= index < len(ids):
            self.notify("No other branch that way." if len(ids) > 1 else "This message has "
                        "no other branches.", timeout=2)
            return
        history.select_branch(ids[index])
        await self.reload_transcript(focus_message=ids[index])

    def action_copy_message(self) -> None:
        """Copy the focused (or last) reply to the clipboard."""
        view = self._target_view()
        if view is not None:
            self._copy(view, code=False)

    def action_copy_code(self) -> None:
        """Copy the last code block of the focused (or last) reply."""
        view = self._target_view()
        if view is not None:
            self._copy(view, code=True)

    @on(MessageView.CopyRequested)
    def _copy_requested(self, event: MessageView.CopyRequested) -> None:
        self._copy(event.view, event.code)

    def _copy(self, view: MessageView, code: bool, index: int = -1) -> None:
        text = view.text
        what = "message"
        if code:
            blocks = code_blocks(text)
            if not blocks:
                self.notify("No code block in this message.", severity="warning")
                return
            text = blocks[index][1]
            what = "code block"
        self.baize.copy_text(text, what)

    @work(group="dialog")
    async def action_export(self) -> None:
        """Save the conversation as Markdown (or JSON, by the file's extension)."""
        if self.conversation_id is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        from baize_tui.paths import get_paths

        default = get_paths().data_dir / "exports" / f"conversation-{self.conversation_id}.md"
        path = await self.app.push_screen_wait(PromptScreen(
            "Export this chat to (.md for Markdown, .json for the lossless JSON export):",
            str(default), ok_label="Export", complete_paths=True))
        if path:
            self.export_to(Path(path).expanduser())

    def export_to(self, path: Path) -> None:
        """Write the current conversation to ``path`` (format by extension)."""
        import json

        from baize_tui.config import atomic_write_text

        assert self.conversation_id is not None
        history = self.baize.history
        if path.suffix.lower() == ".json":
            text = json.dumps(history.export_json(self.conversation_id), ensure_ascii=False,
                              indent=2) + "\n"
        else:
            text = history.export_markdown(self.conversation_id)
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            self.notify(f"{path}: {exc.strerror or exc}", title="Export failed",
                        severity="error")
            return
        self.notify(f"Saved to {path}", title="Exported")

    @work(group="dialog")
    async def action_settings(self) -> None:
        """Open the per-chat settings."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        current = self.settings or ChatSettings.from_config(self.baize.config)
        resolved = self.chat_format()
        default_system = resolved.format.default_system if resolved is not None else None
        from baize_tui.endpoints import listed_specs

        config = self.baize.config
        new = await self.app.push_screen_wait(
            SettingsScreen(current, self.known_models(), default_system=default_system,
                           more_models=lambda: listed_specs(config)))
        if new is not None:
            self.apply_settings(new)

    def known_models(self) -> list[str]:
        """Model specs for the settings' picker: in use, default, recent, on disk, and the
        endpoints' models configured in config.toml (``[openai] models``)."""
        from baize_tui.endpoints import configured_specs
        from baize_tui.known_models import known_specs

        try:
            from baize_tui.models import list_models

            on_disk = [m.path for m in list_models(include_hf_cache=False) if not m.broken]
        except Exception:  # a bad models folder must not keep the settings from opening
            log.debug("could not list the models", exc_info=True)
            on_disk = []
        return known_specs(default=str(self.baize.config.get("model", {}).get("default") or ""),
                           current=(self.settings.model if self.settings else ""),
                           history=self.baize.history, on_disk=on_disk,
                           endpoints=configured_specs(self.baize.config))

    def apply_settings(self, settings: ChatSettings) -> None:
        """Use new settings from the next turn on (saved with the conversation)."""
        self.settings = settings
        if self.conversation_id is not None:
            self.baize.history.update_conversation(
                self.conversation_id, system_prompt=settings.system_prompt,
                model=settings.model, params=settings.stored_params())
        self.baize.ensure_model(settings.model, settings.n_ctx, settings.lora)
        self._show_format()
        self.notify("Settings saved; they apply from the next message.", timeout=3)

    def action_toggle_sidebar(self) -> None:
        """Show or hide the conversation list (this choice stands until the next Ctrl+B)."""
        self.sidebar.toggle_class("hidden")
        self._sidebar_choice = not self.sidebar.has_class("hidden")

    def action_search(self) -> None:
        """Focus the search box of the sidebar."""
        self._sidebar_choice = True
        self.sidebar.remove_class("hidden")
        self.set_focus(self.sidebar.query_one("#search"))

    # ------------------------------------------------------------------ sidebar

    @on(Sidebar.Open)
    async def _open(self, event: Sidebar.Open) -> None:
        try:
            await self.open_conversation(event.conversation_id)
        except NotFoundError:
            self._gone(event.conversation_id)
            return
        self.prompt_box.focus()

    def _gone(self, conversation_id: int) -> None:
        """A conversation listed here was deleted elsewhere (another app window, the CLI)."""
        self.notify(f"Conversation {conversation_id} no longer exists (deleted elsewhere).",
                    severity="warning")
        self.sidebar.reload()

    @on(Sidebar.Action)
    def _sidebar_action(self, event: Sidebar.Action) -> None:
        self.conversation_action(event.action, event.conversation_id)

    @work(group="dialog")
    async def conversation_action(self, action: str, conversation_id: int) -> None:
        """Rename, archive/restore or delete a conversation (asking first where it should)."""
        history = self.baize.history
        try:
            conv = history.get_conversation(conversation_id)
        except NotFoundError:
            self._gone(conversation_id)
            return
        if action == "rename":
            title = await self.app.push_screen_wait(
                PromptScreen("New title:", conv.display_title, ok_label="Rename"))
            if title:
                history.rename(conversation_id, title)
                self.notify(f"Renamed to {title!r}.", timeout=2)
        elif action == "archive":
            history.set_archived(conversation_id, not conv.archived)
            self.notify(("Restored" if conv.archived else "Archived (v in the list shows the "
                         "archive)") + f": {conv.display_title}", timeout=3)
        elif action == "delete":
            sure = await self.app.push_screen_wait(ConfirmScreen(
                f"Delete {conv.display_title!r} and all its messages? This cannot be undone.",
                "Delete"))
            if not sure:
                return
            if conversation_id == self.conversation_id and self.busy:
                self.notify("Stop the reply first (Esc).", severity="warning")
                return
            history.delete_conversation(conversation_id)
            self.notify(f"Deleted {conv.display_title!r}.", timeout=2)
            if conversation_id == self.conversation_id:
                await self.open_conversation(None)
        self.sidebar.reload()

    # ------------------------------------------------------------------ palette

    def palette_commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        """(title, help, callback) for every chat action, for the command palette."""
        commands: list[tuple[str, str, Callable[[], Any]]] = [
            ("Stop generating", "Stop the reply (Esc); the partial text is kept",
             self.action_stop),
            ("New chat", "Start a new conversation", self.action_new_chat),
            ("Regenerate reply", "A new answer to the last message; the old one stays as a "
             "branch", self.action_regenerate),
            ("Edit last message", "Edit and resend your last message as a new branch",
             self.action_edit_last),
            ("Remove last turn", "Delete the last message and its reply",
             self.action_remove_last_turn),
            ("Previous branch", "Show the previous alternative of the focused (or last) message",
             lambda: self.run_action("branch(-1)")),
            ("Next branch", "Show the next alternative of the focused (or last) message",
             lambda: self.run_action("branch(1)")),
            ("Copy message", "Copy the focused (or last) reply", self.action_copy_message),
            ("Export chat", "Save this conversation as Markdown or JSON", self.action_export),
            ("Chat settings", "Model, system prompt, sampling, context size",
             self.action_settings),
            ("Toggle sidebar", "Show or hide the conversation list", self.action_toggle_sidebar),
            ("Search chats", "Full-text search over every conversation", self.action_search),
            ("Show archived chats", "Switch the list between chats and the archive",
             self.sidebar.action_toggle_archived),
        ]
        if self.conversation_id is not None:
            conversation_id = self.conversation_id
            commands += [
                ("Rename chat", "Give this conversation a new title",
                 lambda: self.conversation_action("rename", conversation_id)),
                ("Archive or restore chat", "Hide this conversation from the list (or bring it "
                 "back)", lambda: self.conversation_action("archive", conversation_id)),
                ("Delete chat", "Delete this conversation (asks first)",
                 lambda: self.conversation_action("delete", conversation_id)),
            ]
        view = self._target_view()
        if view is not None:
            for n, (lang, code) in enumerate(code_blocks(view.text)):
                first = code.strip().splitlines()[0][:40] if code.strip() else ""
                commands.append((
                    f"Copy code block {n + 1}" + (f" ({lang})" if lang else ""),
                    Text(first).plain,
                    partial(self._copy, view, True, n),
                ))
        return commands
