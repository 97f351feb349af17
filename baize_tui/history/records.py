"""What the history store holds: messages, conversations, search hits, the schema and its
migrations, and the helpers that turn rows into records (no Textual, no I/O of its own).

The schema version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` holds one step per
version, applied in a single transaction when the store opens. To change the schema, append a
step and never edit an old one.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from baize_tui.errors import UserError

ROLES: tuple[str, ...] = ("user", "assistant")
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "cancelled", "error")
EXPORT_FORMAT = "baize-tui.conversation"
EXPORT_VERSION = 1
BUSY_TIMEOUT_S = 30.0
TITLE_MAX_CHARS = 80


class NotFoundError(UserError, LookupError):
    """No conversation or message with the given id (exit status 2 on the command line)."""


class ImportFormatError(UserError):
    """An import document is not a valid conversation export; the message names the field."""


# --------------------------------------------------------------------------- records


@dataclass
class Message:
    """One node of a conversation tree."""

    id: int
    conversation_id: int
    parent_id: int | None
    role: str
    text: str
    created_at: float
    model: str | None = None
    params: dict[str, Any] | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    complete: bool = True

    @property
    def interrupted(self) -> bool:
        """True for a reply that never finished (killed mid-stream): no finish reason, incomplete."""
        return not self.complete and self.finish_reason is None


@dataclass
class Conversation:
    """A conversation's settings and where its current branch ends."""

    id: int
    title: str | None
    system_prompt: str
    model: str
    params: dict[str, Any]
    created_at: float
    updated_at: float
    archived: bool
    current_leaf_id: int | None

    @property
    def display_title(self) -> str:
        """The title, or a placeholder while the conversation has no user message."""
        return self.title or "New conversation"


@dataclass
class ConversationSummary:
    """What a list of conversations shows; built without loading any message text."""

    id: int
    title: str | None
    updated_at: float
    message_count: int
    archived: bool
    model: str
    created_at: float

    @property
    def display_title(self) -> str:
        """The title, or a placeholder while the conversation has no user message."""
        return self.title or "New conversation"


@dataclass
class SearchHit:
    """One message matching a full-text search."""

    conversation_id: int
    message_id: int
    snippet: str
    role: str
    title: str | None


# --------------------------------------------------------------------------- schema


def _statements(script: str) -> Iterator[str]:
    """Split an SQL script into statements (trigger bodies included) without committing."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement: {pending.strip()[:60]}")


def _script(sql: str) -> Callable[[sqlite3.Connection], None]:
    def step(db: sqlite3.Connection) -> None:
        for statement in _statements(sql):
            db.execute(statement)

    return step


_SCHEMA_1 = """
CREATE TABLE conversations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    title           TEXT,
    system_prompt   TEXT    NOT NULL DEFAULT '',
    model           TEXT    NOT NULL DEFAULT '',
    params_json     TEXT    NOT NULL DEFAULT '{}',
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    archived        INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    current_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL
);
CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id   INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id         INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    text              TEXT    NOT NULL DEFAULT '',
    created_at        REAL    NOT NULL,
    model             TEXT,
    params_json       TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    ttft_s            REAL,
    tokens_per_s      REAL,
    finish_reason     TEXT CHECK (finish_reason IN ('stop', 'length', 'cancelled', 'error')),
    complete          INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1))
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX messages_by_parent ON messages(parent_id);
CREATE INDEX conversations_by_updated ON conversations(archived, updated_at);
CREATE INDEX conversations_by_leaf ON conversations(current_leaf_id);
"""

# Full-text search over message text: an external-content FTS5 table kept in sync by triggers,
# and back-filled from the messages already stored when an older database is upgraded.
_SCHEMA_2 = """
CREATE VIRTUAL TABLE messages_fts USING fts5(
    text, content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, text) VALUES ('delete', old.id, old.text);
    INSERT INTO messages_fts(rowid, text) VALUES (new.id, new.text);
END;
INSERT INTO messages_fts(messages_fts) VALUES ('rebuild');
"""

#: Schema steps: ``MIGRATIONS[n]`` turns a version ``n - 1`` database into version ``n``.
#: Append new steps; never edit one that has shipped.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _script(_SCHEMA_1),  # conversations and message trees
    2: _script(_SCHEMA_2),  # FTS5 search over message text
}
SCHEMA_VERSION = max(MIGRATIONS)


# --------------------------------------------------------------------------- helpers


def make_title(text: str) -> str | None:
    """A one-line title from a user message: its first non-empty line, shortened."""
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            if len(line) <= TITLE_MAX_CHARS:
                return line
            cut = line[: TITLE_MAX_CHARS - 1]
            if " " in cut[TITLE_MAX_CHARS // 2 :]:
                cut = cut.rsplit(" ", 1)[0]
            return cut.rstrip() + "…"
    return None


def format_time(timestamp: float) -> str:
    """A Unix time as local ``YYYY-MM-DD HH:MM``."""
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M")


def fts_query(query: str, *, prefix: bool = True) -> str:
    """Turn what a user typed into a safe FTS5 query.

    Each whitespace-separated word becomes a quoted phrase (so punctuation never raises a
    syntax error), all must match, and with ``prefix`` the last one also matches longer
    words (search-as-you-type). Returns ``""`` when nothing searchable is left.
    """
    words = [w for w in query.split() if re.search(r"\w", w)]
    phrases = ['"' + w.replace('"', '""') + '"' for w in words]
    if phrases and prefix:
        phrases[-1] += "*"
    return " ".join(phrases)


def _rowid(cursor: sqlite3.Cursor) -> int:
    """The id of the row that an INSERT on ``cursor`` just made."""
    if cursor.lastrowid is None:  # pragma: no cover - sqlite3 sets it after every INSERT
        raise RuntimeError("INSERT made no row")
    return cursor.lastrowid


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=row["role"],
        text=row["text"],
        created_at=row["created_at"],
        model=row["model"],
        params=_loads(row["params_json"]),
        prompt_tokens=row["prompt_tokens"],
        completion_tokens=row["completion_tokens"],
        ttft_s=row["ttft_s"],
        tokens_per_s=row["tokens_per_s"],
        finish_reason=row["finish_reason"],
        complete=bool(row["complete"]),
    )


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        model=row["model"],
        params=_loads(row["params_json"]) or {},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived=bool(row["archived"]),
        current_leaf_id=row["current_leaf_id"],
    )


_MESSAGE_FIELDS = (
    "conversation_id, parent_id, role, text, created_at, model, params_json, prompt_tokens, "
    "completion_tokens, ttft_s, tokens_per_s, finish_reason, complete"
)
