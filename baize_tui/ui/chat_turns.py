"""Sending a message and drawing the reply as it streams: the chat screen's turns.

A turn runs like this: the screen mounts the user's message and an empty reply, then an async
worker (group ``generate``) starts a plain thread that asks the core
:class:`~baize_tui.chat_core.ChatController` (shared with ``baize-tui ask``) for the turn (see
turn_flow.py for the parts the worker is made of). Generation never waits on drawing, and no
widget is touched off the loop. Esc sets the turn's cancel event; the engine stops at the next
token and the partial reply is saved as ``cancelled``.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from textual import on, work
from textual.css.query import NoMatches

from baize_tui.chat import ChatTurn
from baize_tui.chat_core import ChatSettings
from baize_tui.ui.chat_base import ChatScreenBase
from baize_tui.ui.turn_flow import GCHold, ReplyCollapsing, SpinClock, Starter, ThreadBridge
from baize_tui.ui.widgets import ChatInput, MessageView

log = logging.getLogger("baize_tui.ui")


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


class ChatTurns(ChatScreenBase):
    """Send, regenerate and stop; the worker that streams a reply into the transcript."""

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
