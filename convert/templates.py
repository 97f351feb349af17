"""Which chat template goes into the GGUF (``tokenizer.chat_template``).

The format the adapter was trained in: a run from ``baize-tui train`` records it in the
adapter directory (``baize_train.json``: ``{"template": "chat" | "release" | "base"}``). Baize's
formats (``chat``, ``release``) embed Baize's template (generated from prompt.py), ``base``
embeds the base checkpoint's own. ``--template baize|base|FILE`` overrides; with no record and
no override Baize's is used, as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from baize_convert import ConvertError
from baize_convert.vocab import Vocab

RECORD_FILE = "baize_train.json"
BAIZE_FORMATS = {"baize", "chat", "release"}
# End-of-turn tokens of the common templates, checked in this order.
EOT_TOKENS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|END_OF_TURN_TOKEN|>")


def recorded_template(adapter_dirs: list[Path]) -> str | None:
    """The template the last adapter was trained in, if its run recorded one."""
    for directory in reversed(adapter_dirs):
        path = directory / RECORD_FILE
        if path.is_file():
            try:
                value = json.loads(path.read_text(encoding="utf-8")).get("template")
            except (OSError, ValueError, AttributeError):
                raise ConvertError(f"{path}: not valid JSON; delete it or pass --template") from None
            if isinstance(value, str) and value:
                return value
    return None


def _baize_template() -> str:
    from baize_tui.prompt import chat_template

    return chat_template()


def eot_for(template: str, vocab: Vocab) -> int | None:
    """The id of the end-of-turn token ``template`` uses, when the vocabulary has it."""
    for text in EOT_TOKENS:
        if text in template:
            token_id = vocab.token_id(text)
            if token_id is not None:
                return token_id
    return None


def resolve_template(choice: str | None, adapter_dirs: list[Path], vocab: Vocab) -> tuple[str, int | None]:
    """(template text, end-of-turn id or None) for ``--template`` ``choice``."""
    source = "--template"
    if choice is None:
        choice, source = recorded_template(adapter_dirs), "the adapter's training record"
    if choice is None or choice in BAIZE_FORMATS:
        return _baize_template(), None
    if choice == "base":
        if not vocab.base_template:
            raise ConvertError(
                f"{source} asks for the base's own chat template, but the base has none "
                "(no chat_template in tokenizer_config.json); pass --template baize or FILE"
            )
        return vocab.base_template, eot_for(vocab.base_template, vocab)
    path = Path(choice).expanduser()
    if not path.is_file():
        raise ConvertError(f"{source} {choice!r}: not baize, base or a template file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: cannot read the template ({exc})") from None
    if not text.strip():
        raise ConvertError(f"{path}: the template file is empty")
    return text, eot_for(text, vocab)
