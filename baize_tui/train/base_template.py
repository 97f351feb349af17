"""Training in the base model's own chat format (``--template base``).

The base checkpoint's ``chat_template`` (from its tokenizer) renders each dialogue through the
same sandboxed Jinja renderer the chat uses (:class:`baize_tui.chat_format.TemplateFormat`), so
an adapter trained this way is chatted with in the format it learnt once ``baize-convert merge``
embeds the base's template (the run records ``"template": "base"`` in ``baize_train.json``).

With ``loss="ai"`` the trained spans are found by rendering the conversation turn by turn: the
text of the first *i* user messages with the template's generation prompt, and the text through
the *i*-th reply. What lies between the two is the reply plus whatever the template closes it
with (``<|im_end|>``, ``<|eot_id|>``, EOS …), so the model learns to stop. A template that does
not only append (it rewrites earlier turns) is refused with a clear message.

:class:`BaseTemplate` is a ``str`` (its value is ``"base"``) so it travels through the data
functions' ``template`` parameter unchanged. Nothing here imports transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from baize_tui.chat_format import TemplateError, TemplateFormat
from baize_tui.errors import UserError

BASE = "base"


class BaseTemplate(str):
    """The template name ``"base"`` carrying the base model's chat template.

    ``strip_bos``: the tokenizer adds BOS itself, so a template's leading ``bos_token`` text
    is left out of the rendering (BOS would otherwise appear twice).
    """

    chat_format: TemplateFormat
    strip_bos: bool

    def __new__(cls, chat_template: str, *, bos_token: str = "", eos_token: str = "",
                strip_bos: bool = True, label: str = "the base model") -> BaseTemplate:
        obj = super().__new__(cls, BASE)
        obj.chat_format = TemplateFormat(chat_template, bos_token=bos_token,
                                         eos_token=eos_token, label=label)
        obj.strip_bos = strip_bos
        return obj

    def _render(self, messages: list[dict[str, str]], generation_prompt: bool) -> str:
        try:
            text = self.chat_format.render_messages(messages,
                                                    add_generation_prompt=generation_prompt)
        except TemplateError as exc:
            raise UserError(f"{exc} (training: use --template chat for Baize's format)") from None
        bos = self.chat_format.bos_token
        if self.strip_bos and bos and text.startswith(bos):
            text = text[len(bos):]
        return text

    def render(self, system: str | None,
               turns: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """(text, AI spans): the whole dialogue, and per reply the characters it covers
        together with the template's closing text after it."""
        messages = TemplateFormat.messages(system, [], None)
        spans: list[tuple[int, int]] = []
        through = ""
        for user, assistant in turns:
            messages.append({"role": "user", "content": user})
            prefix = self._render(messages, True)
            messages.append({"role": "assistant", "content": assistant})
            through_next = self._render(messages, False)
            if not (prefix.startswith(through) and through_next.startswith(prefix)):
                raise UserError(
                    f"the chat template of {self.chat_format.label} does not only append turns "
                    f"(it rewrites earlier text at turn {len(spans) + 1}), so replies cannot be "
                    "masked for training; use --template chat (Baize's format)")
            spans.append((len(prefix), len(through_next)))
            through = through_next
        return through, spans


def _template_text(tokenizer: Any) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates: the default one
        template = template.get("default")
    if isinstance(template, list):  # [{"name", "template"}, …] as tokenizer_config stores it
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def resolve_template(template: str, tokenizer: Any, base: str) -> str:
    """``template`` unchanged, or for ``"base"`` a :class:`BaseTemplate` holding ``tokenizer``'s
    chat template; a :class:`UserError` when the base has none."""
    if template != BASE or isinstance(template, BaseTemplate):
        return template
    chat_template = _template_text(tokenizer)
    if chat_template is None:
        raise UserError(
            f"{base}: --template base trains in the base model's own chat format, but its "
            "tokenizer has no chat template (no chat_template in tokenizer_config.json); use "
            "--template chat (Baize's format) or a base model that has one")
    bos = getattr(tokenizer, "bos_token", None) or ""
    adds_bos = False
    if bos:
        ids = tokenizer("", add_special_tokens=True)["input_ids"]
        adds_bos = bool(ids) and ids[0] == tokenizer.bos_token_id
    return BaseTemplate(chat_template, bos_token=bos,
                        eos_token=getattr(tokenizer, "eos_token", None) or "",
                        strip_bos=adds_bos, label=base)
