"""Every model the app knows: the default, the one in use, models past chats used, and the
GGUFs on disk — not just the models folder.

Used by the models screen (F8), which lists a GGUF opened from anywhere (first run, a
chat's settings) next to those found in the models folders, and by the model picker of the
chat settings (F2), which also offers endpoints (``openai:MODEL``) and ``hf:`` specs.
No Textual here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: How many past conversations are read for the models they used.
RECENT_CONVERSATIONS = 200


def recent_specs(history: Any, limit: int = RECENT_CONVERSATIONS) -> list[str]:
    """Model specs of the newest conversations, newest first, each once."""
    specs: list[str] = []
    try:
        conversations = history.list_conversations(include_archived=True, limit=limit)
    except Exception:  # a locked or damaged history must not hide the models
        return specs
    for conv in conversations:
        if conv.model and conv.model not in specs:
            specs.append(conv.model)
    return specs


def _is_path(spec: str) -> bool:
    kind, sep, _ = spec.partition(":")
    return not (sep and kind in ("openai", "hf", "http", "https"))


def known_specs(*, default: str, current: str = "", history: Any = None,
                on_disk: Iterable[Path] = (), endpoints: Iterable[str] = ()) -> list[str]:
    """Model specs for a picker: the one in use, the default, recent ones, files on disk,
    then ``endpoints`` (``openai:MODEL`` specs configured in config.toml); each once (paths
    compared by their real path)."""
    out: list[str] = []
    seen: set[str] = set()

    def add(spec: str) -> None:
        if not spec:
            return
        key = os.path.realpath(os.path.expanduser(spec)) if _is_path(spec) else spec
        if key not in seen:
            seen.add(key)
            out.append(spec)

    add(current)
    add(default)
    for spec in recent_specs(history) if history is not None else []:
        add(spec)
    for path in on_disk:
        add(str(path))
    for spec in endpoints:
        add(spec)
    return out


def list_known_models(history: Any = None, extra: Iterable[str] = ()) -> list[Any]:
    """:func:`baize_tui.models.list_models` plus every other GGUF the app knows of (the
    default, ``extra`` such as the model in use, and models of past chats), described from
    their headers; those outside the models folders have source ``opened``. A known file that
    is gone is listed as broken, so the user sees why."""
    from baize_tui.models import default_model, describe, list_models

    found = list_models()
    seen = {os.path.realpath(m.path) for m in found}
    default = default_model()
    candidates = [default, *extra, *(recent_specs(history) if history is not None else [])]
    for spec in candidates:
        if not spec or not _is_path(spec):
            continue
        path = Path(spec).expanduser()
        if path.suffix.lower() != ".gguf":
            continue
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        model = describe(path, "opened")
        model.is_default = bool(default) and real == os.path.realpath(
            Path(default).expanduser())
        found.append(model)
    return found
