"""One keymap: the keys of every screen, what F1 lists, and where typed keys go.

The same key means the same thing on every screen:

* **Ctrl+S** saves: a dialog's fields, the chat (export), the self-chat data (export).
* **Ctrl+G** starts (go): a self-chat run, a training run.
* **Ctrl+R** regenerates a reply (chat only); the training preview is **Ctrl+O**.
* **Esc** stops or cancels; **F1** lists the keys of the screen you are on.

Two key-routing rules live here, both applied by the app before a key is handed to a
widget (so they hold even when keys arrive faster than the UI handles them):

* Tab and Shift+Tab move focus at once (:data:`FOCUS_BINDINGS` are priority bindings): a
  key typed right after Tab reaches the field that gets focus, not the one it leaves.
* A printable key typed where it means nothing (a message or the chat list has focus, and
  no key of theirs is bound to it) goes to the screen's type-ahead target (the prompt box).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget

#: Focus moves handled by the app itself, before the next key is dispatched.
FOCUS_BINDINGS = [
    Binding("tab", "focus_next", "Next field", show=False, priority=True, id="app.focus_next"),
    Binding("shift+tab", "focus_previous", "Previous field", show=False, priority=True,
            id="app.focus_previous"),
]

#: Keys every screen has (not bindings of ours, or handled by Textual itself).
COMMON_ROWS: list[tuple[str, str, str]] = [
    ("ctrl+p", "Command palette (every action, themes, modes)", "-"),
    ("ctrl+q", "Quit (asks first while a self-chat run or a download is going)", "-"),
    ("tab, shift+tab", "Next / previous field", "app.focus_next"),
]


def binding_rows(sources: Iterable[tuple[str, Iterable[Any]]],
                 keymap: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(keys, description, binding id) of every binding with an id in ``sources``
    (``(prefix, bindings)`` pairs), with ``keymap`` overrides applied; each id once."""
    rows: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for prefix, bindings in sources:
        for binding in bindings:
            if not isinstance(binding, Binding) or binding.id is None or binding.id in seen:
                continue
            if binding.id in ("app.focus_next", "app.focus_previous"):
                continue  # listed once, in COMMON_ROWS
            seen.add(binding.id)
            keys = keymap.get(binding.id, binding.key)
            rows.append((keys, prefix + (binding.description or binding.action), binding.id))
    return rows


def screen_key_sources(screen: Screen[Any]) -> list[tuple[str, Iterable[Any]]]:
    """The bindings to list for ``screen``: its own, and those of the widgets it names in
    ``help_sources()`` (e.g. the chat's messages and list)."""
    sources: list[tuple[str, Iterable[Any]]] = [("", type(screen).BINDINGS)]
    extra = getattr(screen, "help_sources", None)
    if callable(extra):
        sources.extend(extra())
    return sources


def typeahead_redirect(screen: Screen[Any], event: events.Key) -> Widget | None:
    """Where a printable key typed on ``screen`` should go instead of the focused widget, or
    ``None`` to leave it be. A screen opts in with ``typeahead_target(focused)``, which names
    the widget (the prompt box) for a focused widget that has no use for typing."""
    target_for = getattr(screen, "typeahead_target", None)
    if target_for is None or not event.is_printable or not event.character:
        return None
    focused = screen.focused
    target = target_for(focused)
    if target is None or target is focused:
        return None
    if event.key in screen.active_bindings:
        return None  # the key means something here (c copies a message, d deletes a chat)
    return target
