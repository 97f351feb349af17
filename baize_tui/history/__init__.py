"""Conversation history: an SQLite store of message trees, with full-text search and export.

:mod:`.records` (records, schema, migrations), :mod:`.store` (:class:`HistoryStore`) and
:mod:`.io` (JSON and Markdown export, JSON import). Every public name is importable from
``baize_tui.history`` itself. This package imports no Textual: the UI, ``ask`` and the
``history`` subcommand all use it."""

from __future__ import annotations

from baize_tui.history.io import (
    ImportExport,
)
from baize_tui.history.records import (
    BUSY_TIMEOUT_S,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    FINISH_REASONS,
    MIGRATIONS,
    ROLES,
    SCHEMA_VERSION,
    TITLE_MAX_CHARS,
    Conversation,
    ConversationSummary,
    ImportFormatError,
    Message,
    NotFoundError,
    SearchHit,
    format_time,
    fts_query,
    make_title,
)
from baize_tui.history.store import (
    HistoryStore,
)

__all__ = [
    "ROLES",
    "FINISH_REASONS",
    "EXPORT_FORMAT",
    "EXPORT_VERSION",
    "BUSY_TIMEOUT_S",
    "TITLE_MAX_CHARS",
    "NotFoundError",
    "ImportFormatError",
    "Message",
    "Conversation",
    "ConversationSummary",
    "SearchHit",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "make_title",
    "format_time",
    "fts_query",
    "HistoryStore",
    "ImportExport",
]
