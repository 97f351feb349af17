"""Text on its way to a terminal outside the Textual app: control characters made inert.

Prompts, replies and titles are data. Printed raw, ``ESC ]0;…BEL`` retitles the window,
``ESC [2J`` clears it, OSC 52 writes the clipboard and OSC 8 plants links. :func:`term_safe`
replaces every C0 control (except newline and tab), DEL, every C1 control and the Unicode
bidirectional overrides with a visible escape (``\\x1b``, ``\\u202e``), so the text still
shows what it holds but the terminal never obeys it. Exports to files keep the text intact.

:func:`echo` is how a command prints a line that holds stored or model text (a run's status,
a dialogue, a server's error message); :func:`rich_safe` does the same for text handed to a
Rich console, whose ``[…]`` markup would otherwise be obeyed too.
"""

from __future__ import annotations

import re
import sys
from typing import TextIO

_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def term_safe(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with terminal control characters shown as escapes (newlines/tabs kept)."""
    if not keep_newlines:
        text = text.replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    return _CONTROL.sub(_visible, text)


def is_terminal_safe(text: str) -> bool:
    """Whether ``text`` holds no control character :func:`term_safe` would escape."""
    return _CONTROL.search(text) is None


def echo(text: str, *, file: TextIO | None = None, flush: bool = False) -> None:
    """``print(term_safe(text))`` (to stdout unless ``file``)."""
    print(term_safe(text), file=file if file is not None else sys.stdout, flush=flush)


def rich_safe(text: str) -> str:
    """``text`` made inert for a Rich console: control characters escaped, markup quoted."""
    from rich.markup import escape

    return escape(term_safe(text))
