"""The one chat controller shared by the chat screen and ``baize-tui ask``.

It owns the two things that used to be written twice and drifted apart:

- **settings resolution** — :class:`ChatSettings` from ``[chat]`` in ``config.toml`` for a new
  chat, from the conversation for a saved one, then explicit overrides (``ask`` flags or the F2
  dialog); and the chat format resolved against what the model file says
  (:func:`baize_tui.chat_format.resolve_format`);
- **driving a turn** — :meth:`ChatController.send` / :meth:`ChatController.regenerate` build the
  :class:`~baize_tui.chat.ChatSession` for the right thread (new chat, continued chat, edited
  branch), keep the prompt's start stable per conversation so the KV cache keeps serving, and
  return the streaming :class:`~baize_tui.chat.ChatTurn`.

Nothing here imports Textual.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from baize_tui.chat import ChatSession, ChatTurn
from baize_tui.chat_format import ResolvedFormat, check_choice, resolve_format
from baize_tui.engines.base import Engine, SamplingParams
from baize_tui.errors import UserError

if TYPE_CHECKING:
    from baize_tui.history import HistoryStore, Message


def _n_ctx(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


@dataclass(frozen=True)
class ChatSettings:
    """The settings of one chat: model, chat format, system prompt, sampling, context size.

    ``system_prompt=None`` means the format's default (Baize's system prompt for Baize's
    format, none for a model's own template). ``format`` is ``auto``, ``baize`` or
    ``template`` (see :mod:`baize_tui.chat_format`).
    """

    model: str = ""
    system_prompt: str | None = None
    params: SamplingParams = field(default_factory=SamplingParams)
    n_ctx: int | None = None  # None: the model's own, capped by model.max_ctx
    format: str = "auto"
    #: a GGUF LoRA adapter applied on the (GGUF) model at load; stored with the conversation
    lora: str | None = None

    @classmethod
    def from_config(cls, config: dict[str, Any], model: str | None = None) -> ChatSettings:
        """Defaults for a new chat: ``model.default`` and the ``[chat]`` table of config.toml
        (``format``, ``system_prompt``, ``n_ctx`` and any sampling parameter)."""
        chat = config.get("chat", {}) if isinstance(config.get("chat"), dict) else {}
        try:
            params = SamplingParams.from_dict(chat)
        except (UserError, TypeError):
            params = SamplingParams()
        try:
            fmt = check_choice(str(chat.get("format") or "auto"), where="[chat] format")
        except UserError:
            fmt = "auto"
        system = chat.get("system_prompt")
        return cls(
            model=model if model is not None else str(config.get("model", {}).get("default", "")),
            system_prompt=str(system) if system else None,
            params=params,
            n_ctx=_n_ctx(chat.get("n_ctx")),
            format=fmt,
        )

    @classmethod
    def from_conversation(cls, model: str, system_prompt: str | None,
                          params: dict[str, Any]) -> ChatSettings:
        """The settings stored with a conversation (its params dict holds ``n_ctx``,
        ``format`` and ``lora`` beside the sampling parameters). A stored system prompt that is Baize's
        default, or empty, means the format's default (what a new chat stores)."""
        from baize_tui.prompt import BAIZE_SYSTEM_PROMPT

        if system_prompt in ("", BAIZE_SYSTEM_PROMPT):
            system_prompt = None
        try:
            sampling = SamplingParams.from_dict(params)
        except (UserError, TypeError):
            sampling = SamplingParams()
        try:
            fmt = check_choice(str(params.get("format") or "auto"))
        except UserError:
            fmt = "auto"
        lora = params.get("lora")
        return cls(model=model, system_prompt=system_prompt, params=sampling,
                   n_ctx=_n_ctx(params.get("n_ctx")), format=fmt,
                   lora=lora if isinstance(lora, str) and lora else None)

    def stored_params(self) -> dict[str, Any]:
        """The params dict saved with a conversation (sampling, ``n_ctx``, ``format``,
        ``lora``)."""
        data = self.params.to_dict()
        if self.n_ctx:
            data["n_ctx"] = self.n_ctx
        if self.format != "auto":
            data["format"] = self.format
        if self.lora:
            data["lora"] = self.lora
        return data

    def with_overrides(self, *, system_prompt: str | None = None, fmt: str | None = None,
                       n_ctx: int | None = None, lora: str | None = None,
                       **sampling: Any) -> ChatSettings:
        """A copy with explicit choices applied (``None`` leaves a setting as it is; an
        empty ``lora`` drops the adapter)."""
        return replace(
            self,
            lora=self.lora if lora is None else (lora or None),
            system_prompt=self.system_prompt if system_prompt is None else system_prompt,
            format=self.format if fmt is None else check_choice(fmt),
            n_ctx=self.n_ctx if n_ctx is None else n_ctx,
            params=self.params.with_(**sampling),
        )


def format_for(engine: Engine | None, choice: str) -> ResolvedFormat:
    """Resolve ``choice`` for ``engine``: engines that read their model file (llama.cpp) say
    what it holds; others (chat APIs) take Baize's rendering, as before."""
    info = None
    chat_info = getattr(engine, "chat_info", None)
    if callable(chat_info):
        info = chat_info()
    return resolve_format(choice, info)


class ChatController:
    """Resolves a chat's settings and drives its turns, for the chat screen and ``ask``.

    One controller per engine and history; conversations are named per call, so the screen can
    switch chats without a new controller. The prompt start each conversation's last prompt
    kept is remembered, so the KV cache survives once the context is full.
    """

    def __init__(self, engine: Engine, history: HistoryStore | None) -> None:
        self.engine = engine
        self.history = history
        self._first_kept: dict[int, int] = {}
        self._formats: dict[str, ResolvedFormat] = {}

    def resolved(self, settings: ChatSettings) -> ResolvedFormat:
        """The chat format these settings give on this engine (cached per choice)."""
        if settings.format not in self._formats:
            self._formats[settings.format] = format_for(self.engine, settings.format)
        return self._formats[settings.format]

    def session(self, settings: ChatSettings, conversation_id: int | None = None, *,
                leaf_id: int | None = None, branch_root: bool = False) -> ChatSession:
        """The session for a new chat (``conversation_id=None``), a continued one, or a
        branch: ``leaf_id`` continues from that message, ``branch_root`` starts the thread
        again (an edited first message)."""
        fmt = self.resolved(settings).format
        history = self.history
        if conversation_id is None or history is None:
            return ChatSession(self.engine, history=history, system_prompt=settings.system_prompt,
                               params=settings.params, fmt=fmt)
        if branch_root:
            return ChatSession(self.engine, history=history,
                               system_prompt=settings.system_prompt, params=settings.params,
                               conversation_id=conversation_id, fmt=fmt)
        session = ChatSession.resume(self.engine, history, conversation_id,
                                     params=settings.params, leaf_id=leaf_id, fmt=fmt)
        session.system_prompt = settings.system_prompt  # None: the format's default
        if leaf_id is None:  # same thread: keep the prompt's start (and the KV cache)
            session.first_kept = self._first_kept.get(conversation_id, 0)
        return session

    def _remember(self, session: ChatSession, settings: ChatSettings, new: bool) -> None:
        if session.conversation_id is None:
            return
        self._first_kept[session.conversation_id] = session.first_kept
        if new and self.history is not None:
            self.history.update_conversation(session.conversation_id,
                                             params=settings.stored_params())

    def send(self, settings: ChatSettings, text: str, cancel: threading.Event, *,
             conversation_id: int | None = None, editing: Message | None = None,
             session: ChatSession | None = None) -> ChatTurn:
        """Start a turn with ``text`` (as a new message, or replacing ``editing``)."""
        if session is None:
            if editing is not None:
                session = self.session(settings, conversation_id,
                                       leaf_id=editing.parent_id,
                                       branch_root=editing.parent_id is None)
            else:
                session = self.session(settings, conversation_id)
        turn = session.send(text, cancel)
        self._remember(session, settings, new=conversation_id is None)
        return turn

    def regenerate(self, settings: ChatSettings, conversation_id: int,
                   cancel: threading.Event) -> ChatTurn:
        """A new reply to the conversation's last user message (the old one stays a branch)."""
        session = self.session(settings, conversation_id)
        turn = session.regenerate(cancel)
        self._remember(session, settings, new=False)
        return turn
