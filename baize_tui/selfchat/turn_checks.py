"""Speaker labels inside a turn: the sign of a model writing both sides in one reply.

A small model asked for one turn often continues the dialogue itself
(``"Hello! How can I help?\\nAI\\nHi! ...\\nHuman\\n..."``). Such a turn is rejected with its
own reason, ``speaker_label_in_turn``, whatever the label's form: ``Human:``, ``AI:``,
``[Human]``, ``[|AI|]``, ``User:``, ``Assistant:``, or a bare ``Human``/``AI`` line, any casing.
"""

from __future__ import annotations

import re

REASON_SPEAKER_LABEL = "speaker_label_in_turn"

_NAMES = r"(?:human|ai|user|assistant|bot|chatbot)"
# a label on its own line ("AI", "Human:"), or at a line start followed by a colon,
# or bracketed anywhere ("[Human]", "[|AI|]")
_LABEL = re.compile(
    rf"(?im)^[ \t]*{_NAMES}[ \t]*:?[ \t]*$"
    rf"|^[ \t]*{_NAMES}[ \t]*:"
    rf"|\[\|?[ \t]*{_NAMES}[ \t]*\|?\]"
)


def find_speaker_label(text: str) -> str | None:
    """The first speaker label found in ``text`` (stripped), or None."""
    match = _LABEL.search(text)
    return match.group(0).strip() if match else None


def speaker_label_problem(turns: list[tuple[str, str]]) -> str | None:
    """A one-line detail naming the turn, side and label when any turn holds one, else None."""
    for i, (human, ai) in enumerate(turns, 1):
        for side, text in (("human", human), ("AI", ai)):
            label = find_speaker_label(text)
            if label is not None:
                return f"turn {i}: the {side} part contains the speaker label {label!r}"
    return None
