"""A chat session: history + the Baize format + an engine + the stop filter, one turn at a time.

This is the headless core of the chat screen and of ``baize-tui ask``::

    session = ChatSession(engine, history=HistoryStore())     # or ChatSession.resume(...)
    turn = session.send("Hello!", cancel)
    for piece in turn:          # visible text only: cut at [|Human|]/[|AI|], stripped
        print(piece, end="")
    turn.text, turn.stats       # the saved reply and its stats

The user message is saved before anything is generated; the reply row is created when
generation starts (incomplete) and finished with its text, finish reason and stats when the
turn ends, whether it stopped, hit the length limit, was cancelled or failed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from baize_tui.chat_format import BaizeFormat
from baize_tui.engines.base import Engine, SamplingParams, TurnStats
from baize_tui.errors import UserError
from baize_tui.prompt import Fitted, StopFilter, Turn, fit, to_messages
from baize_tui.redact import SecretStream, scrub_secrets

if TYPE_CHECKING:
    from baize_tui.chat_format import ChatFormat
    from baize_tui.history import HistoryStore
    from baize_tui.stream_saver import PartialSaver

log = logging.getLogger("baize_tui.chat")

#: a stop string no reply contains, for a format whose replies end on tokens only
NO_STOP = ("\x00\uffff\x00",)


@dataclass
class PreparedPrompt:
    """What will be sent for a new message: the fitted prompt (or messages) and its numbers."""

    payload: str | list[dict[str, str]]
    prompt: str
    prompt_tokens: int
    kept_turns: list[Turn] = field(default_factory=list)
    dropped_turns: int = 0
    first_kept: int = 0  # index of the oldest past turn in the prompt


def reply_reserve(max_new_tokens: int, n_ctx: int) -> int:
    """Tokens kept free for the reply when fitting: the reply budget, but at most a quarter
    of the context, so a small-context model still takes messages. (The reply itself may go
    on until the budget is spent or the context is full.)"""
    return max(1, min(max_new_tokens, n_ctx // 4))


class ChatTurn(Iterator[str]):
    """One reply being generated: iterate for the visible text pieces.

    The pieces never show a registered secret (an API key a server echoes back): an end that
    could grow into one waits for the next piece. After iteration ends (or :meth:`close`),
    :attr:`text` is the reply as saved (secrets masked), and
    :attr:`stats` its numbers; :attr:`user_message_id` and :attr:`reply_message_id` are the
    history rows (``None`` without history). :attr:`dropped_turns` tells how many old turns
    were left out to fit the context.
    """

    def __init__(self, pieces: Iterator[str], prepared: PreparedPrompt) -> None:
        self._pieces = pieces
        self._secrets = SecretStream()
        self.prepared = prepared
        self.dropped_turns = prepared.dropped_turns
        self.text = ""
        self.stats = TurnStats()
        self.user_message_id: int | None = None
        self.reply_message_id: int | None = None
        self.done = False

    def __iter__(self) -> ChatTurn:
        return self

    def __next__(self) -> str:
        while True:
            try:
                piece = next(self._pieces)
            except StopIteration:
                if rest := self._secrets.flush():
                    return rest
                raise
            if shown := self._secrets.feed(piece):
                return shown

    def close(self) -> None:
        """Stop now; the reply so far is saved as cancelled.

        Call it from the thread that iterates the turn. From any other thread (a UI
        cancelling a worker) set the ``cancel`` event given to :meth:`ChatSession.send`
        instead: the turn then ends within one token and is saved as cancelled.
        """
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()

    def run(self) -> str:
        """Generate to the end and return the reply text."""
        for _ in self:
            pass
        return self.text


class ChatSession:
    """One conversation with one engine, optionally saved in a :class:`HistoryStore`.

    ``turns`` are the finished exchanges in the prompt, oldest first. Without ``history``
    everything stays in memory (``ask --no-history``).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        history: HistoryStore | None = None,
        system_prompt: str | None = None,
        params: SamplingParams | None = None,
        conversation_id: int | None = None,
        turns: list[Turn] | None = None,
        leaf_id: int | None = None,
        fmt: ChatFormat | None = None,
    ) -> None:
        self.engine = engine
        self.history = history
        #: how the conversation becomes a prompt (Baize's format unless given)
        self.fmt: ChatFormat = fmt or BaizeFormat()
        self.system_prompt = system_prompt  # None: the format's default
        self.params = params or SamplingParams()
        self.conversation_id = conversation_id
        self.turns: list[Turn] = list(turns or [])
        self.leaf_id = leaf_id
        #: while a reply streams, its text so far is saved at most this often (seconds), so
        #: a crash or kill mid-reply keeps it (marked incomplete); ``None`` saves only at the end
        self.partial_save_s: float | None = 1.0
        #: the oldest turn the last prompt kept: earlier ones stay out, so the prompt's start
        #: (and the engine's KV cache) survives from turn to turn once the context is full
        self.first_kept = 0
        #: when turns must be dropped, free this fraction of the context beyond what is needed
        self.drop_headroom = 0.25
        # Without history, what regenerate re-asks: the last message sent, and whether its
        # reply made it into ``turns`` (an empty reply does not).
        self._last_sent: str | None = None
        self._last_appended = False
        self._lock = threading.Lock()

    @classmethod
    def resume(
        cls,
        engine: Engine,
        history: HistoryStore,
        conversation_id: int,
        *,
        params: SamplingParams | None = None,
        system_prompt: str | None = None,
        leaf_id: int | None = None,
        fmt: ChatFormat | None = None,
    ) -> ChatSession:
        """Continue a saved conversation from its current leaf (or from ``leaf_id``).

        Its stored system prompt and sampling parameters apply unless overridden. Past turns
        are the user → assistant pairs on the current thread; a user message left without a
        reply (a crash or a failed turn) is not sent again.
        """
        conv = history.get_conversation(conversation_id)
        thread = history.thread(conversation_id, leaf_id=leaf_id)
        turns: list[Turn] = []
        pending_user: str | None = None
        for message in thread:
            if message.role == "user":
                pending_user = message.text
            elif message.role == "assistant" and pending_user is not None:
                if message.text:
                    turns.append(Turn(pending_user, message.text))
                pending_user = None
        return cls(
            engine,
            history=history,
            system_prompt=system_prompt if system_prompt is not None else conv.system_prompt,
            params=params or SamplingParams.from_dict(conv.params),
            conversation_id=conversation_id,
            turns=turns,
            leaf_id=thread[-1].id if thread else None,
            fmt=fmt,
        )

    @property
    def system(self) -> str:
        """The system prompt in effect (empty: none)."""
        if self.system_prompt is None:
            return self.fmt.default_system or ""
        return self.system_prompt

    def prepare(self, text: str, params: SamplingParams | None = None) -> PreparedPrompt:
        """Fit the conversation plus ``text`` into the engine's context (nothing is saved).

        Raises :class:`~baize_tui.prompt.ContextOverflow` when even the new message does not
        fit with the reply budget reserved.
        """
        params = params or self.params
        n_ctx = self.engine.n_ctx
        if n_ctx > 0:
            fitted = fit(
                self.system, self.turns, text, n_ctx=n_ctx,
                max_new_tokens=reply_reserve(params.max_new_tokens, n_ctx),
                count_tokens=self.engine.count_tokens,
                min_start=self.first_kept, headroom=self.drop_headroom,
                renderer=self.fmt.render,
            )
        else:  # unknown context (remote API): send everything, let the server decide
            prompt = self.fmt.render(self.system, self.turns, text)
            fitted = Fitted(prompt, self.engine.count_tokens(prompt), list(self.turns), 0)
        payload: str | list[dict[str, str]] = fitted.prompt
        if self.engine.takes_messages:
            payload = to_messages(self.system, fitted.kept_turns, text)
        return PreparedPrompt(payload, fitted.prompt, fitted.prompt_tokens, fitted.kept_turns,
                              fitted.dropped_turns, fitted.first_kept)

    def _ensure_conversation(self) -> None:
        if self.history is not None and self.conversation_id is None:
            self.conversation_id = self.history.create_conversation(
                system_prompt=self.system, model=self.engine.spec, params=self.params.to_dict()
            )

    def send(
        self,
        text: str,
        cancel: threading.Event | None = None,
        *,
        params: SamplingParams | None = None,
    ) -> ChatTurn:
        """Start a turn: fit, save the user message, and return the streaming :class:`ChatTurn`.

        Fitting happens first, so a message that cannot fit raises
        :class:`~baize_tui.prompt.ContextOverflow` before anything is saved.
        """
        params = params or self.params
        cancel = cancel or threading.Event()
        prepared = self.prepare(text, params)
        self.first_kept = prepared.first_kept
        turn = ChatTurn(iter(()), prepared)
        if self.history is not None:
            self._ensure_conversation()
            assert self.conversation_id is not None
            turn.user_message_id = self.history.add_message(
                self.conversation_id, parent_id=self.leaf_id, role="user", text=text
            )
            self.leaf_id = turn.user_message_id
        self._last_sent, self._last_appended = text, False
        turn._pieces = self._run(turn, text, params, cancel)
        return turn

    def _run(
        self, turn: ChatTurn, text: str, params: SamplingParams, cancel: threading.Event
    ) -> Iterator[str]:
        history = self.history
        with self._lock:
            if history is not None:
                assert self.conversation_id is not None
                turn.reply_message_id = history.add_message(
                    self.conversation_id, parent_id=turn.user_message_id, role="assistant",
                    text="", model=self.engine.spec, params=params.to_dict(), complete=False,
                )
                self.leaf_id = turn.reply_message_id
            stops = self.fmt.stop_strings
            flt = StopFilter(stops or NO_STOP)
            gen = None
            saver = None
            error: BaseException | None = None
            try:
                gen = self.engine.stream(turn.prepared.payload, params, cancel, stop=stops)
                turn.stats = gen.stats
                saver = self._partial_saver(turn)
                for piece in gen:
                    shown = flt.feed(piece)
                    if shown:
                        if saver is not None:
                            saver.update(flt.text)  # on disk within partial_save_s
                        yield shown
                    if flt.stopped or cancel.is_set():
                        break
                tail = flt.finish()
                if tail:
                    yield tail
            except BaseException as exc:  # GeneratorExit / KeyboardInterrupt = cancelled
                error = exc
                raise
            finally:
                stopped_by_text = flt.stopped and not cancel.is_set() and error is None
                if saver is not None:
                    saver.close()
                if gen is not None:
                    gen.close()
                flt.finish()  # whatever was held back is part of what was generated
                turn.text = scrub_secrets(flt.text)
                stats = turn.stats
                if cancel.is_set() or isinstance(error, (GeneratorExit, KeyboardInterrupt)):
                    stats.finish_reason = "cancelled"
                elif error is not None:
                    stats.finish_reason = "error"
                    stats.error = str(error) or type(error).__name__
                elif stopped_by_text and stats.finish_reason in (None, "cancelled"):
                    stats.finish_reason = "stop"
                turn.done = True
                self._save(turn, text, error)

    def _partial_saver(self, turn: ChatTurn) -> PartialSaver | None:
        """A timer that saves the reply shown so far (None without history)."""
        if self.history is None or turn.reply_message_id is None or self.partial_save_s is None:
            return None
        from baize_tui.stream_saver import PartialSaver

        return PartialSaver(lambda text: self._save_partial(turn, text),
                            interval=min(self.partial_save_s, 0.5))

    def _save_partial(self, turn: ChatTurn, text: str) -> None:
        """Save the reply so far (still incomplete); a failed write never stops generation."""
        if self.history is None or turn.reply_message_id is None:
            return
        try:
            self.history.update_message(turn.reply_message_id, text=text)
        except Exception as exc:  # e.g. the database is locked for longer than the timeout
            log.warning("could not save the partial reply: %s", exc)

    def regenerate(
        self,
        cancel: threading.Event | None = None,
        *,
        params: SamplingParams | None = None,
    ) -> ChatTurn:
        """Answer the last user message again: the new reply is a sibling of the old one.

        The current thread must end with a user message or with a reply to one (the reply
        being replaced stays in history as another branch). Raises :class:`UserError` when
        there is nothing to regenerate.
        """
        params = params or self.params
        cancel = cancel or threading.Event()
        user_id: int | None = None
        if self.history is not None and self.leaf_id is not None:
            leaf = self.history.get_message(self.leaf_id)
            if leaf.role == "assistant":
                if leaf.parent_id is None:
                    raise UserError("nothing to regenerate: the reply has no user message")
                user = self.history.get_message(leaf.parent_id)
                if leaf.text and self.turns and self.turns[-1] == Turn(user.text, leaf.text):
                    self.turns.pop()
            else:
                user = leaf
            user_id, text = user.id, user.text
        elif self.history is None and self._last_sent is not None:
            text = self._last_sent
            if self._last_appended and self.turns:
                self.turns.pop()
        elif self.history is None and self.turns:
            text = self.turns.pop().user
        else:
            raise UserError("nothing to regenerate: send a message first")
        prepared = self.prepare(text, params)
        self.first_kept = prepared.first_kept
        turn = ChatTurn(iter(()), prepared)
        turn.user_message_id = user_id
        self.leaf_id = user_id
        self._last_sent, self._last_appended = text, False
        turn._pieces = self._run(turn, text, params, cancel)
        return turn

    def _save(self, turn: ChatTurn, user_text: str, error: BaseException | None) -> None:
        stats = turn.stats
        if turn.text:
            self.turns.append(Turn(user_text, turn.text))
            self._last_appended = True
        if self.history is not None and turn.reply_message_id is not None:
            self.history.update_message(
                turn.reply_message_id,
                text=turn.text,
                finish_reason=stats.finish_reason,
                prompt_tokens=stats.prompt_tokens,
                completion_tokens=stats.completion_tokens,
                ttft_s=stats.ttft_s,
                tokens_per_s=stats.tokens_per_s,
                complete=stats.finish_reason in ("stop", "length"),
            )

    def describe(self) -> dict[str, Any]:
        """The session's settings, for status lines."""
        return {
            "engine": self.engine.describe(),
            "conversation": self.conversation_id,
            "turns": len(self.turns),
            "format": self.fmt.name,
            "params": self.params.to_dict(),
        }
