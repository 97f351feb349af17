"""Chat formats: how a conversation becomes a prompt for one model.

A conversation is a system prompt, finished turns and a new message; a :class:`ChatFormat`
renders it as the exact prompt text. Two formats exist:

- :class:`BaizeFormat`: Baize's ``[|Human|]``/``[|AI|]`` framing (strings in
  :mod:`baize_tui.prompt`), with Baize's default system prompt and its stop strings.
- :class:`TemplateFormat`: the model's own chat template (``tokenizer.chat_template`` in its
  GGUF), rendered by a sandboxed Jinja2 environment with what real templates use:
  ``raise_exception``, ``strftime_now``, ``bos_token``/``eos_token``,
  ``add_generation_prompt`` and loop controls. No system prompt unless the user sets one.

:func:`resolve_format` turns a choice (``auto``, ``baize`` or ``template``) and what the
model says about itself (:class:`ModelChatInfo`) into a format plus the reason it was chosen,
which the UI and ``ask --stats`` show. Nothing here imports an engine or Textual.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Protocol

from baize_tui.errors import UserError
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT, STOP_STRINGS, render

FORMAT_CHOICES: tuple[str, ...] = ("auto", "baize", "template")
FORMAT_HELP = ("auto (the model's chat template; Baize's format when it has none), baize, "
               "or template")

#: stands for an assistant reply when finding what a template writes after one
_SENTINEL = "\x00BAIZE-TUI-REPLY\x00"


class TemplateError(UserError):
    """A chat template could not render this conversation."""


@dataclass(frozen=True)
class ModelChatInfo:
    """What a model file says about how to chat with it."""

    name: str = ""
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    @property
    def baize_template(self) -> bool:
        """The embedded template renders Baize's ``[|Human|]``/``[|AI|]`` format."""
        return bool(self.chat_template) and "[|Human|]" in (self.chat_template or "")

    @property
    def baize_named(self) -> bool:
        """The model's name says Baize (a sign for a file without a template)."""
        return "baize" in self.name.lower()


class ChatFormat(Protocol):
    """Renders a conversation as one model's prompt text."""

    #: ``baize`` or ``template``
    name: str
    #: the system prompt used when the user sets none (``None``: no system message)
    default_system: str | None

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """Text that ends a reply when the model writes it out as plain text."""
        ...

    def render(self, system: str | None, past_turns: Iterable[tuple[str, str]],
               new_message: str) -> str:
        """The exact prompt, ending where the model's reply starts."""
        ...


class BaizeFormat:
    """Baize's own format (see :mod:`baize_tui.prompt`)."""

    name = "baize"
    default_system: str | None = BAIZE_SYSTEM_PROMPT
    stop_strings: tuple[str, ...] = STOP_STRINGS

    def render(self, system: str | None, past_turns: Iterable[tuple[str, str]],
               new_message: str) -> str:
        """See :func:`baize_tui.prompt.render` (``None`` means Baize's system prompt)."""
        return render(system, past_turns, new_message)


def _raise_exception(message: str) -> None:
    raise TemplateError(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


class TemplateFormat:
    """A model's own Jinja chat template, rendered in a sandbox.

    ``label`` names the model in error messages. The template is compiled on first use; a
    template that does not even parse raises :class:`TemplateError` then.
    """

    name = "template"
    default_system: str | None = None

    def __init__(self, template: str, *, bos_token: str = "", eos_token: str = "",
                 label: str = "the model") -> None:
        self.source = template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.label = label

    @cached_property
    def _template(self) -> Any:
        from jinja2 import TemplateSyntaxError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            return env.from_string(self.source)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"the chat template of {self.label} does not parse (line {exc.lineno}: "
                f"{exc.message}); choose Baize's format instead (--format baize, or Format "
                f"in the chat settings, F2)") from None

    def render_messages(self, messages: list[dict[str, str]], *,
                        add_generation_prompt: bool = True) -> str:
        """Render chat messages through the template (raises :class:`TemplateError`)."""
        from jinja2 import TemplateError as JinjaError
        from jinja2 import UndefinedError

        template = self._template
        try:
            return str(template.render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token,
            ))
        except TemplateError as exc:
            raise TemplateError(
                f"the chat template of {self.label} refused this conversation: {exc}; "
                f"choose Baize's format instead (--format baize, or Format in the chat "
                f"settings, F2)") from None
        except UndefinedError as exc:
            raise TemplateError(
                f"the chat template of {self.label} needs a value baize-tui does not provide "
                f"({exc.message}); choose Baize's format instead (--format baize, or Format "
                f"in the chat settings, F2)") from None
        except (JinjaError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise TemplateError(
                f"the chat template of {self.label} failed ({type(exc).__name__}: {exc}); "
                f"choose Baize's format instead (--format baize, or Format in the chat "
                f"settings, F2)") from None

    @staticmethod
    def messages(system: str | None, past_turns: Iterable[tuple[str, str]],
                 new_message: str | None) -> list[dict[str, str]]:
        """The conversation as chat messages (no system message when ``system`` is empty)."""
        out = [{"role": "system", "content": system}] if system else []
        for user, assistant in past_turns:
            out.append({"role": "user", "content": user})
            out.append({"role": "assistant", "content": assistant})
        if new_message is not None:
            out.append({"role": "user", "content": new_message})
        return out

    def render(self, system: str | None, past_turns: Iterable[tuple[str, str]],
               new_message: str) -> str:
        """The prompt: every message, then the template's generation prompt."""
        return self.render_messages(self.messages(system, past_turns, new_message))

    @cached_property
    def stop_strings(self) -> tuple[str, ...]:
        """What the template writes right after an assistant reply (``<|im_end|>``, …).

        Found by rendering a sentinel reply; an engine that parses specials turns each into
        its token id. Empty when the template ends replies with nothing but EOS.
        """
        try:
            text = self.render_messages(
                [{"role": "user", "content": "x"}, {"role": "assistant", "content": _SENTINEL}],
                add_generation_prompt=False)
        except TemplateError:
            return ()
        after = text.partition(_SENTINEL)[2].strip()
        closing = after.split()[0] if after.split() else ""
        stops = [s for s in (closing, self.eos_token) if s]
        return tuple(dict.fromkeys(stops))


@dataclass(frozen=True)
class ResolvedFormat:
    """The format in use for a chat, the choice it came from, and why."""

    format: ChatFormat
    choice: str
    reason: str
    #: a notice the user must see (e.g. a guess because the file gave no sign)
    notice: str | None = None

    @property
    def name(self) -> str:
        """``baize`` or ``template``."""
        return self.format.name

    @property
    def label(self) -> str:
        """Short text for a status line: ``Baize``, ``template``, ``Baize (auto)``."""
        text = "Baize" if self.name == "baize" else "template"
        return f"{text} (auto)" if self.choice == "auto" else text


def check_choice(choice: str, *, where: str = "--format") -> str:
    """``choice`` normalised, or a :class:`UserError` naming ``where`` and the options."""
    value = (choice or "auto").strip().lower()
    if value not in FORMAT_CHOICES:
        raise UserError(f"{where}: unknown chat format {choice!r}; use {FORMAT_HELP}")
    return value


def resolve_format(choice: str, info: ModelChatInfo | None) -> ResolvedFormat:
    """Pick the format for ``choice`` given what the model says (``None``: unknown model).

    ``auto``: Baize's format when the embedded template is Baize's (same text, plus Baize's
    stop strings), else the embedded template; with no template, Baize's format — with a
    notice when the file shows no sign of being Baize. ``template`` without a template is a
    :class:`UserError`.
    """
    choice = check_choice(choice)
    if choice == "baize" or info is None:
        why = "chosen" if choice == "baize" else "the engine takes Baize's format"
        return ResolvedFormat(BaizeFormat(), choice, why)
    label = info.name or "this model"
    if info.chat_template and not (choice == "auto" and info.baize_template):
        return ResolvedFormat(
            TemplateFormat(info.chat_template, bos_token=info.bos_token,
                           eos_token=info.eos_token, label=label),
            choice, "the model's embedded chat template")
    if choice == "template":
        raise UserError(f"{label} has no chat template in its file; use --format auto or "
                        f"baize (Format in the chat settings, F2)")
    if info.baize_template:
        return ResolvedFormat(BaizeFormat(), choice, "the embedded template is Baize's")
    if info.baize_named:
        return ResolvedFormat(BaizeFormat(), choice, "no chat template; the model's name says "
                              "Baize")
    return ResolvedFormat(
        BaizeFormat(), choice, "no chat template and no sign of Baize",
        notice=f"{label} has no chat template and no sign of being Baize: using Baize's "
               f"format (choose another with --format, or Format in the settings, F2)")
