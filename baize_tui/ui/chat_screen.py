"""The chat screen: sidebar, transcript, prompt box and status line.

A turn runs like this: the screen mounts the user's message and an empty reply, then an async
worker (group ``generate``) starts a plain thread that calls :class:`~baize_tui.chat.ChatSession`
(which saves the user message, fits the prompt, streams from the engine and saves the reply,
with partial saves while it streams) and hands each visible piece to the event loop through an
:class:`asyncio.Queue`. Generation never waits on drawing, and no widget is touched off the
loop. Esc sets the turn's cancel event; the engine stops at the next token and the partial
reply is saved as ``cancelled``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
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
from textual.widgets import Footer, Static

from baize_tui.chat import ChatSession, ChatTurn
from baize_tui.history import Message, NotFoundError
from baize_tui.ui.collapse import Collapser
from baize_tui.ui.gc_pacing import pacer as gc_pacer
from baize_tui.ui.screens import ChatSettings, ConfirmScreen, PromptScreen, SettingsScreen
from baize_tui.ui.sidebar import Sidebar
from baize_tui.ui.textual_compat import OneLayoutPass, install_reflow_compositor
from baize_tui.ui.widgets import ChatInput, MessageInfo, MessageView, StatusBar, code_blocks

if TYPE_CHECKING:
    from baize_tui.ui.app import BaizeApp

log = logging.getLogger("baize_tui.ui")

#: At most this many messages of a thread are mounted (the newest).
MAX_MOUNTED = 200
SPIN_INTERVAL = 0.1
#: Once a reply's text is flowing the text itself shows progress, so the spinners turn more
#: slowly: each turn is a frame of its own.
STREAM_SPIN_INTERVAL = 0.25
#: Seconds after a reply ends before the collector's held-off full pass runs.
GC_AFTER_REPLY = 0.5
#: :meth:`ChatScreen.call_after_layout` runs its callbacks after at most this many seconds
#: even when no layout pass comes.
AFTER_LAYOUT_AT_MOST = 0.5

Starter = Callable[[threading.Event], ChatTurn]


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


class ChatScreen(OneLayoutPass, Screen[None]):
    """Chat with the loaded model; every conversation is saved in the history store."""

    BINDINGS = [
        Binding("escape", "stop", "Stop", id="chat.stop"),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("ctrl+t", "edit_last", "Edit last", id="chat.edit_last"),
        Binding("f9", "remove_last_turn", "Remove turn", show=False, id="chat.remove_last_turn"),
        Binding("alt+left", "branch(-1)", "Prev branch", show=False, id="chat.branch_prev"),
        Binding("alt+right", "branch(1)", "Next branch", show=False, id="chat.branch_next"),
        Binding("f3", "copy_message", "Copy", show=False, id="chat.copy_message"),
        Binding("f4", "copy_code", "Copy code", show=False, id="chat.copy_code"),
        Binding("ctrl+s", "export", "Export", show=False, id="chat.export"),
        Binding("f2", "settings", "Settings", id="chat.settings"),
        Binding("ctrl+b", "toggle_sidebar", "Sidebar", show=False, id="chat.toggle_sidebar"),
        Binding("ctrl+f", "search", "Search", show=False, id="chat.search"),
    ]

    def __init__(self) -> None:
        super().__init__(id="chat")
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
        # Per conversation, the oldest turn its last prompt kept: a new ChatSession per turn
        # starts from it, so once the context is full the prompt's start stays put and
        # llama.cpp's KV cache keeps serving (see ChatSession.first_kept).
        self._first_kept: dict[int, int] = {}

    @property
    def baize(self) -> BaizeApp:
        """The app, typed."""
        return self.app  # type: ignore[return-value]

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
                yield StatusBar(id="status")
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
    def status(self) -> StatusBar:
        """The status line."""
        return self.query_one("#status", StatusBar)

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
        self._spin_timer = self.set_interval(SPIN_INTERVAL, self._spin, pause=True)
        start = self.baize.start_conversation
        if start is not None:
            await self.open_conversation(start)
        else:
            # Load after the first frame: the screen shows before llama.cpp is even imported.
            settings = self.settings
            self.call_after_refresh(self.baize.ensure_model, settings.model, settings.n_ctx)

    # ------------------------------------------------------------------ model state

    def _model_state_changed(self, state: str) -> None:
        app = self.baize
        status = self.status
        status.model_label = app.model_label
        status.n_ctx = app.engine.n_ctx if app.engine is not None else 0
        if state == "loading":
            self._set_state("loading model…")
        elif state == "error":
            self._set_state(f"model failed: {app.model_error}")
        elif not self.busy:
            self._set_state("")

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
        await self._transcript_moved()

    async def _collapse(self) -> None:
        if self.busy:
            for collapser in self._collapsers:
                await collapser.collapse()

    @staticmethod
    async def _expand_for_good(collapsers: list[Collapser]) -> None:
        for collapser in collapsers:
            await collapser.expand(close=True)

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
            self.settings = ChatSettings.from_conversation(
                conv.model or self.baize.model_spec, conv.system_prompt, conv.params
            )
        self.status.dropped_turns = 0
        self.status.tokens_per_s = None
        self.status.ttft_s = None
        await self.reload_transcript()
        self.sidebar.set_current(conversation_id)
        self.baize.ensure_model(self.settings.model, self.settings.n_ctx)

    async def reload_transcript(self, focus_message: int | None = None) -> None:
        """Redraw the shown thread from history (after a branch switch, an edit, a delete)."""
        history = self.baize.history
        thread = [] if self.conversation_id is None else history.thread(self.conversation_id)
        shown = thread[-MAX_MOUNTED:]
        views = []
        for message in shown:
            siblings = [m.id for m in history.siblings(message.id)]
            branch = (siblings.index(message.id) + 1, len(siblings)) if len(siblings) > 1 else None
            views.append(MessageView(message.role, message.text, _info(message, branch)))
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
                return
        self.status.used_tokens = None

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
        engine = self.baize.engine
        history = self.baize.history
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

        def start(cancel: threading.Event) -> ChatTurn:
            assert engine is not None
            if conversation_id is None:
                session = ChatSession(engine, history=history,
                                      system_prompt=settings.system_prompt,
                                      params=settings.params)
            elif editing is not None and editing.parent_id is None:
                conv = history.get_conversation(conversation_id)
                session = ChatSession(engine, history=history, system_prompt=conv.system_prompt,
                                      params=settings.params, conversation_id=conversation_id)
            else:
                leaf = editing.parent_id if editing is not None else None
                session = ChatSession.resume(engine, history, conversation_id,
                                             params=settings.params, leaf_id=leaf)
                if editing is None:  # same thread: keep the prompt's start (and the KV cache)
                    session.first_kept = self._first_kept.get(conversation_id, 0)
            turn = session.send(text, cancel)
            if session.conversation_id is not None:
                self._first_kept[session.conversation_id] = session.first_kept
            if conversation_id is None and session.conversation_id is not None:
                history.update_conversation(session.conversation_id,
                                            params=settings.stored_params())
            return turn

        self.busy = True  # until the worker ends (a second Enter must not send twice)
        user_view = MessageView("user", text)
        reply_view = MessageView("assistant")
        await self.transcript.mount_all([user_view, reply_view])
        self.transcript.scroll_end(animate=False)
        self._generate(start, reply_view, user_view, typed if typed is not None else text)

    @work(exclusive=True, group="generate")
    async def _generate(self, start: Starter, reply: MessageView, user: MessageView | None,
                        restore: str | None) -> None:
        """Run one turn: a thread produces pieces, this worker draws them."""
        loop = asyncio.get_running_loop()
        # The thread appends to ``items``; it wakes this worker only for what must be seen at
        # once (the turn starting, its first piece, its end). Other pieces wait for the next
        # frame: no wake-up per token.
        items: deque[tuple[str, Any]] = deque()
        wake = asyncio.Event()
        cancel = threading.Event()
        self._cancel = cancel
        self.busy = True
        self._set_state("generating…")

        def put(kind: str, value: Any = None, urgent: bool = True) -> None:
            items.append((kind, value))
            if urgent:
                loop.call_soon_threadsafe(wake.set)

        def produce() -> None:
            try:
                turn = start(cancel)
                put("turn", turn)
                first = True
                for piece in turn:
                    put("piece", piece, urgent=first)
                    first = False
                put("done", turn)
            except BaseException as exc:  # travels to the UI side
                put("error", exc)

        producer = asyncio.ensure_future(asyncio.to_thread(produce))
        running = (cancel, producer)
        self.baize.running_turns.add(running)
        turn: ChatTurn | None = None
        reply.start_stream()
        self._collapsers = [Collapser(self.transcript, self.transcript),
                            Collapser(reply.body, self.transcript, min_collapsed=1)]
        self.call_after_refresh(self._collapse)
        body_children = 1  # the reply's segments (and its spacer, once it has one)
        last_spin = time.monotonic()
        spin_interval = SPIN_INTERVAL
        self._spinning_in_worker = True
        gc_pacer.start()
        try:
            ended = False
            while not ended:
                wait = reply.next_write_in()
                spin_due = max(0.0, last_spin + spin_interval - time.monotonic())
                try:
                    await asyncio.wait_for(
                        wake.wait(), spin_due if wait is None else min(wait, spin_due)
                    )
                except asyncio.TimeoutError:
                    pass
                wake.clear()
                text: list[str] = []
                while items and not ended:
                    kind, value = items.popleft()
                    if kind == "piece":
                        text.append(value)
                        continue
                    if text:
                        await self._feed(reply, turn, "".join(text))
                        text.clear()
                    if kind == "turn":
                        turn = value
                        self._turn_started(turn, reply, user)
                    elif kind == "done":
                        await self._turn_finished(value, reply)
                        ended = True
                    else:
                        await self._turn_failed(value, turn, reply, user, restore)
                        ended = True
                if text:
                    await self._feed(reply, turn, "".join(text))
                    spin_interval = STREAM_SPIN_INTERVAL
                elif not ended:
                    await reply.flush()
                if ended:
                    break
                if time.monotonic() - last_spin >= spin_interval:
                    last_spin = time.monotonic()
                    reply.spin()
                    self.status.spinner += 1
                # Right after a write: a due full pass then delays no words.
                if reply.next_write_in() is None:
                    gc_pacer.tick()
                    if len(reply.body.children) != body_children:  # a segment was finished
                        body_children = len(reply.body.children)
                        self.call_after_refresh(self._collapse)
        finally:
            self._spinning_in_worker = False
            # After the frame with the last words (bringing everything back costs a layout).
            collapsers, self._collapsers = self._collapsers, []
            self.call_after_layout(self._expand_for_good, collapsers)
            if gc_pacer.stop():
                # The full pass held off while streaming, once the last words are on screen.
                self.app.set_timer(GC_AFTER_REPLY, gc_pacer.release)
            cancel.set()
            if reply.streaming and reply.is_mounted:
                try:
                    await reply.finish_stream()
                except Exception:  # e.g. the app is closing and the view is gone
                    log.debug("could not settle the reply view", exc_info=True)
            try:
                await asyncio.shield(producer)
            finally:
                self.baize.running_turns.discard(running)
            self.busy = False
            self._cancel = None
            try:
                self._model_state_changed(self.baize.model_state)
            except NoMatches:  # the app is closing mid-reply: the status line is already gone
                log.debug("status line gone while a reply ended", exc_info=True)

    @staticmethod
    async def _feed(reply: MessageView, turn: ChatTurn | None, text: str) -> None:
        if turn is not None and reply.info.message_id is None:
            # The reply row is written when the turn's first piece is pulled, which may be
            # after the "turn" event was handled.
            reply.info.message_id = turn.reply_message_id
        await reply.feed(text)

    def _turn_started(self, turn: ChatTurn, reply: MessageView, user: MessageView | None) -> None:
        if user is not None:
            user.info.message_id = turn.user_message_id
        reply.info.message_id = turn.reply_message_id
        if self.conversation_id is None and turn.user_message_id is not None:
            self.conversation_id = self.baize.history.get_message(
                turn.user_message_id).conversation_id
            self.sidebar.set_current(self.conversation_id)
        self.status.dropped_turns = turn.dropped_turns
        self.status.used_tokens = turn.prepared.prompt_tokens
        self.sidebar.reload()

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
        self.status.used_tokens = (stats.prompt_tokens or turn.prepared.prompt_tokens) + (
            stats.completion_tokens or 0)
        self.status.tokens_per_s = stats.tokens_per_s
        self.status.ttft_s = stats.ttft_s
        if stats.finish_reason == "error":
            self.notify(f"Generation failed: {stats.error}", severity="error", timeout=8)
        self.sidebar.reload()

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
        self.notify(str(exc) or type(exc).__name__, title="Could not generate",
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
        engine = self.baize.engine
        history = self.baize.history
        conversation_id = self.conversation_id
        params = (self.settings or ChatSettings()).params
        views = self._views()
        if thread[-1].role == "assistant" and views and views[-1].role == "assistant":
            await views[-1].remove()
        reply_view = MessageView("assistant")
        await self.transcript.mount(reply_view)
        self.transcript.scroll_end(animate=False)

        def start(cancel: threading.Event) -> ChatTurn:
            assert engine is not None
            session = ChatSession.resume(engine, history, conversation_id, params=params)
            session.first_kept = self._first_kept.get(conversation_id, 0)
            turn = session.regenerate(cancel)
            self._first_kept[conversation_id] = session.first_kept
            return turn

        self._generate(start, reply_view, None, None)

    def action_edit_last(self) -> None:
        """Put the last user message back in the prompt box; sending it makes a new branch."""
        if self.busy:
            self.notify("Stop the reply first (Esc).", severity="warning")
            return
        message = self._last_message("user")
        if message is None:
            self.notify("No message to edit.", severity="warning")
            return
        self._editing = message
        banner = self.query_one("#edit-banner", Static)
        banner.update("Editing your last message: Enter sends it as a new branch, Esc cancels.")
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
        self.baize.history.delete_message(message.id)
        await self.reload_transcript()
        self.sidebar.reload()
        self.notify("Removed the last turn.")

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
            str(default), ok_label="Export"))
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
        new = await self.app.push_screen_wait(SettingsScreen(current))
        if new is not None:
            self.apply_settings(new)

    def apply_settings(self, settings: ChatSettings) -> None:
        """Use new settings from the next turn on (saved with the conversation)."""
        self.settings = settings
        if self.conversation_id is not None:
            self.baize.history.update_conversation(
                self.conversation_id, system_prompt=settings.system_prompt,
                model=settings.model, params=settings.stored_params())
        self.baize.ensure_model(settings.model, settings.n_ctx)
        self.notify("Settings saved; they apply from the next message.", timeout=3)

    def action_toggle_sidebar(self) -> None:
        """Show or hide the conversation list."""
        self.sidebar.toggle_class("hidden")

    def action_search(self) -> None:
        """Focus the search box of the sidebar."""
        self.sidebar.remove_class("hidden")
        self.sidebar.query_one("#search").focus()

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
                f"Delete {conv.display_title!r} and all its messages? This cannot be undone."))
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
