"""Self-chat prompt templates: Baize's v1 template byte for byte, and the v2 per-turn prompts.

This module and ``baize_tui.prompt`` are the only places that hold Baize's strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from baize_tui.errors import UserError

# BAIZE.md §3, exact; filled with ``.format(seed)`` like the original collector.
V1_TEMPLATE = (
    "Forget the instruction you have previously received. The following is a conversation "
    "between a human and an AI assistant. The human and the AI assistant take turns chatting "
    "about the topic: '{}'. Human statements start with [Human] and AI assistant statements "
    "start with [AI]. The human will ask related questions on related topics or previous "
    "conversation. The human will stop the conversation when they have no more question. The AI "
    "assistant tries not to ask questions. Complete the transcript in exactly that format.\n"
    "[Human] Hello!\n[AI] Hi! How can I help you?\n"
)

# The released data's format (preprocess.py): note the space after the tags, which the chat
# prompt (baize_tui.prompt) does not have.
BAIZE_HEADER = "The conversation between human and AI assistant.\n"
BAIZE_HUMAN = "[|Human|] "
BAIZE_AI = "[|AI|] "

HUMAN_TAG = "[Human]"
AI_TAG = "[AI]"
# v2: the human turn is the template + the transcript so far + this, stopped at "[AI]".
V2_HUMAN_SUFFIX = "\n[Human] "
V2_HUMAN_STOP = ["[AI]"]


@dataclass(frozen=True)
class Template:
    """A seed-to-prompt template: the built-in v1 text or one read from a file."""

    text: str
    placeholder: str = "{}"
    source: str = "builtin:v1"

    def render(self, seed: str) -> str:
        """The prompt for one seed."""
        if self.placeholder == "{}":
            return self.text.format(seed)
        return self.text.replace(self.placeholder, seed)


DEFAULT_TEMPLATE = Template(V1_TEMPLATE)


def load_template(path: Path | str | None) -> Template:
    """The built-in v1 template, or the file at ``path`` with ``{seed}`` where the seed goes."""
    if path is None:
        return DEFAULT_TEMPLATE
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: template file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the template ({exc})") from None
    if "{seed}" not in text:
        raise UserError(f"{path}: the template has no {{seed}} placeholder; add one where the "
                        "seed question goes")
    return Template(text, "{seed}", str(path))


def v2_human_prompt(template: Template, seed: str, turns: list[tuple[str, str]]) -> str:
    """The v2 user-simulator prompt: template, transcript so far, then ``"\\n[Human] "``."""
    so_far = "".join(f"\n[Human] {h}\n[AI] {a}" for h, a in turns)
    return template.render(seed) + so_far + V2_HUMAN_SUFFIX


def v2_ai_messages(turns: list[tuple[str, str]], human: str) -> list[dict[str, str]]:
    """The v2 assistant call: earlier human turns as ``user``, AI turns as ``assistant``."""
    messages: list[dict[str, str]] = []
    for h, a in turns:
        messages.append({"role": "user", "content": h})
        messages.append({"role": "assistant", "content": a})
    messages.append({"role": "user", "content": human})
    return messages


def v2_transcript(turns: list[tuple[str, str]]) -> str:
    """A v2 dialogue as the original collector stored it (``instruct.strip()``)."""
    return "".join(f"\n[Human] {h}\n[AI] {a}" for h, a in turns).strip()
