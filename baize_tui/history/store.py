"""Conversation history: an SQLite store of message trees, with full-text search and export.

Every conversation is a tree of messages. A message has a parent (``None`` for a root), and a
conversation points at its *current leaf*; the thread shown to the user is the path from the
root to that leaf. Regenerating a reply adds a sibling assistant message, editing a user
message adds a sibling user message, and every earlier branch stays reachable
(:meth:`HistoryStore.siblings`, :meth:`HistoryStore.select_branch`).

Durability: the database runs in WAL mode with a busy timeout, and every write is one short
``BEGIN IMMEDIATE`` transaction, so several processes (two app instances, ``baize-tui ask``)
can write at once without losing anything. A reply is inserted when it starts
(``complete=False``) and rewritten as it streams (:meth:`HistoryStore.update_message` is cheap
enough for a few calls per second); if the process dies mid-reply, the text written so far is
kept, still marked incomplete. ``synchronous=NORMAL`` means a power cut may lose the last few
commits but never corrupts the file; a killed process loses nothing it committed.

The schema and its migrations are in :mod:`baize_tui.history.records`; export and import in
:mod:`baize_tui.history.io`.

This module imports no Textual: the UI, ``ask`` and the ``history`` subcommand all use it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.history.io import ImportExport
from baize_tui.history.records import (
    _MESSAGE_FIELDS,
    BUSY_TIMEOUT_S,
    FINISH_REASONS,
    MIGRATIONS,
    ROLES,
    SCHEMA_VERSION,
    Conversation,
    ConversationSummary,
    Message,
    NotFoundError,
    SearchHit,
    _conversation,
    _dumps,
    _message,
    _rowid,
    fts_query,
    make_title,
)
from baize_tui.history_guard import check_integrity, db_fault, is_store_fault
from baize_tui.paths import get_paths
from baize_tui.redact import scrub_secrets

# --------------------------------------------------------------------------- the store


class HistoryStore(ImportExport):
    """Every saved conversation, in one SQLite file (default: ``baize-tui paths history``).

    Safe to share between threads (calls are serialised) and between processes (WAL, busy
    timeout, short immediate transactions). Use as a context manager or call :meth:`close`.
    Unknown ids raise :class:`NotFoundError`; an unusable database file raises
    :class:`~baize_tui.errors.OperationFailed`.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else get_paths().history_db
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
        except OSError as exc:
            from baize_tui.safe_write import describe_os_error

            raise OperationFailed(describe_os_error(self.path.parent, exc,
                                                    "cannot open the history database")) from exc
        except sqlite3.Error as exc:
            raise db_fault(self.path, exc) from exc
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA foreign_keys = ON")
            self._retry_busy(lambda: self._db.execute("PRAGMA journal_mode = WAL").fetchone())
            self._db.execute("PRAGMA synchronous = NORMAL")
            check_integrity(self._db, self.path)
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if not isinstance(exc, sqlite3.DatabaseError):
                raise
            raise db_fault(self.path, exc) from exc

    # ---- plumbing

    def _retry_busy(self, action: Callable[[], Any]) -> Any:
        """Run ``action``, retrying while another process holds a lock SQLite won't wait on."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        self._check_not_newer(version)
        with self._write() as db:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_not_newer(version)
            for step in range(version + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[step](db)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _check_not_newer(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise OperationFailed(
                f"{self.path}: history schema version {version} is newer than this baize-tui "
                f"understands ({SCHEMA_VERSION}); upgrade baize-tui"
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One immediate (write-locked) transaction; rolled back on any exception."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.DatabaseError as exc:
                raise db_fault(self.path, exc) from exc
            try:
                yield db
                db.execute("COMMIT")
            except BaseException as exc:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.DatabaseError:
                        pass
                if isinstance(exc, sqlite3.DatabaseError):
                    raise db_fault(self.path, exc) from exc
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several queries see one consistent snapshot."""
        with self._lock:
            try:
                self._db.execute("BEGIN")
                yield self._db
            except sqlite3.DatabaseError as exc:
                raise db_fault(self.path, exc) from exc
            finally:
                if self._db.in_transaction:
                    self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                if not is_store_fault(exc):
                    raise  # e.g. a malformed search query, reported by search()
                raise db_fault(self.path, exc) from exc

    def _require_conversation(self, db: sqlite3.Connection, conversation_id: int) -> sqlite3.Row:
        row = db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no conversation with id {conversation_id} in {self.path}")
        return row

    def _require_message(self, db: sqlite3.Connection, message_id: int) -> sqlite3.Row:
        row = db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no message with id {message_id} in {self.path}")
        return row

    def close(self) -> None:
        """Close the database (the last connection to close also checkpoints the WAL)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the open database."""
        return self._query("PRAGMA user_version")[0][0]

    # ---- conversations

    def create_conversation(
        self, *, system_prompt: str, model: str, params: dict[str, Any], title: str | None = None
    ) -> int:
        """Start an empty conversation; returns its id. Without ``title``, the first user
        message names it."""
        now = time.time()
        system_prompt = scrub_secrets(system_prompt)
        title = scrub_secrets(title) if title else title
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, system_prompt, model, params_json, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?)",
                (title, system_prompt, model, _dumps(dict(params)), now, now),
            )
            return _rowid(cursor)

    def get_conversation(self, conversation_id: int) -> Conversation:
        """One conversation's settings and current leaf."""
        with self._lock:
            return _conversation(self._require_conversation(self._db, conversation_id))

    def update_conversation(
        self,
        conversation_id: int,
        *,
        system_prompt: str | None = None,
        model: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        """Change per-chat settings (what is ``None`` stays as it is)."""
        sets: dict[str, Any] = {}
        if system_prompt is not None:
            sets["system_prompt"] = scrub_secrets(system_prompt)
        if model is not None:
            sets["model"] = model
        if params is not None:
            sets["params_json"] = _dumps(dict(params))
        with self._write() as db:
            self._require_conversation(db, conversation_id)
            if sets:
                assignments = ", ".join(f"{key} = ?" for key in sets)
                db.execute(
                    f"UPDATE conversations SET {assignments} WHERE id = ?",
                    (*sets.values(), conversation_id),
                )

    def rename(self, conversation_id: int, title: str) -> None:
        """Set a conversation's title (whitespace collapsed to one line)."""
        title = scrub_secrets(" ".join(title.split()))
        if not title:
            raise UserError(f"conversation {conversation_id}: the title must not be empty")
        with self._write() as db:
            self._require_conversation(db, conversation_id)
            db.execute("UPDATE conversations SET title = ? WHERE id = ?", (title, conversation_id))

    def set_archived(self, conversation_id: int, archived: bool = True) -> None:
        """Archive (hide from the default list) or restore a conversation."""
        with self._write() as db:
            self._require_conversation(db, conversation_id)
            db.execute(
                "UPDATE conversations SET archived = ? WHERE id = ?",
                (int(bool(archived)), conversation_id),
            )

    def delete_conversation(self, conversation_id: int) -> None:
        """Delete a conversation and every message in it."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))
            if cursor.rowcount == 0:
                raise NotFoundError(f"no conversation with id {conversation_id} in {self.path}")

    def last_conversation_id(self) -> int | None:
        """The most recently updated conversation that is not archived, if any."""
        rows = self._query(
            "SELECT id FROM conversations WHERE archived = 0"
            " ORDER BY updated_at DESC, id DESC LIMIT 1"
        )
        return rows[0]["id"] if rows else None

    def list_conversations(
        self,
        *,
        include_archived: bool = False,
        limit: int | None = None,
        offset: int = 0,
        archived_only: bool = False,
    ) -> list[ConversationSummary]:
        """Conversations newest first (by last update), without loading message text."""
        where = ""
        if archived_only:
            where = "WHERE c.archived = 1"
        elif not include_archived:
            where = "WHERE c.archived = 0"
        rows = self._query(
            "SELECT c.id, c.title, c.updated_at, c.archived, c.model, c.created_at,"
            " (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id) AS message_count"
            f" FROM conversations c {where} ORDER BY c.updated_at DESC, c.id DESC"
            " LIMIT ? OFFSET ?",
            (-1 if limit is None else limit, offset),
        )
        return [
            ConversationSummary(
                id=r["id"],
                title=r["title"],
                updated_at=r["updated_at"],
                message_count=r["message_count"],
                archived=bool(r["archived"]),
                model=r["model"],
                created_at=r["created_at"],
            )
            for r in rows
        ]

    # ---- messages

    def add_message(
        self,
        conversation_id: int,
        *,
        parent_id: int | None,
        role: str,
        text: str,
        model: str | None = None,
        params: dict[str, Any] | None = None,
        complete: bool = True,
    ) -> int:
        """Append a message under ``parent_id`` (``None``: a new root) and make it the
        conversation's current leaf; returns its id.

        Adding a second child under the same parent makes a branch: that is how regenerate
        (a sibling assistant reply) and edit (a sibling user message) are stored. The first
        user message names an untitled conversation. A streaming reply starts with
        ``complete=False`` and is finished by :meth:`update_message`.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        text = scrub_secrets(text, partial=not complete)  # a key a server echoed never lands
        now = time.time()
        with self._write() as db:
            self._require_conversation(db, conversation_id)
            if parent_id is not None:
                parent = self._require_message(db, parent_id)
                if parent["conversation_id"] != conversation_id:
                    raise ValueError(
                        f"message {parent_id} belongs to conversation "
                        f"{parent['conversation_id']}, not {conversation_id}"
                    )
            cursor = db.execute(
                f"INSERT INTO messages ({_MESSAGE_FIELDS})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, NULL, NULL, ?)",
                (conversation_id, parent_id, role, text, now, model, _dumps(params), int(complete)),
            )
            message_id = _rowid(cursor)
            title = make_title(text) if role == "user" else None
            db.execute(
                "UPDATE conversations SET current_leaf_id = ?, updated_at = ?,"
                " title = COALESCE(title, ?) WHERE id = ?",
                (message_id, now, title, conversation_id),
            )
            return message_id

    def update_message(
        self,
        message_id: int,
        *,
        text: str | None = None,
        finish_reason: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        ttft_s: float | None = None,
        tokens_per_s: float | None = None,
        complete: bool | None = None,
    ) -> None:
        """Rewrite fields of a message (``None`` leaves a field alone); ``text`` replaces the
        whole text. One small transaction: fine to call several times a second while a
        reply streams, and each call is durable against the process being killed."""
        if finish_reason is not None and finish_reason not in FINISH_REASONS:
            raise ValueError(
                f"finish_reason must be one of {', '.join(FINISH_REASONS)}, not {finish_reason!r}"
            )
        if text is not None:  # a key a server echoed (or its first half, mid-stream) never lands
            text = scrub_secrets(text, partial=complete is not True)
        sets: dict[str, Any] = {
            key: value
            for key, value in (
                ("text", text),
                ("finish_reason", finish_reason),
                ("prompt_tokens", prompt_tokens),
                ("completion_tokens", completion_tokens),
                ("ttft_s", ttft_s),
                ("tokens_per_s", tokens_per_s),
                ("complete", None if complete is None else int(complete)),
            )
            if value is not None
        }
        with self._write() as db:
            row = db.execute(
                "SELECT conversation_id FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"no message with id {message_id} in {self.path}")
            if sets:
                assignments = ", ".join(f"{key} = ?" for key in sets)
                db.execute(
                    f"UPDATE messages SET {assignments} WHERE id = ?", (*sets.values(), message_id)
                )
                db.execute(
                    "UPDATE conversations SET updated_at = ? WHERE id = ?",
                    (time.time(), row["conversation_id"]),
                )

    def get_message(self, message_id: int) -> Message:
        """One message by id."""
        with self._lock:
            return _message(self._require_message(self._db, message_id))

    def thread(self, conversation_id: int, *, leaf_id: int | None = None) -> list[Message]:
        """The messages from the root to the current leaf (or to ``leaf_id``), in order."""
        with self._read() as db:
            conversation = self._require_conversation(db, conversation_id)
            if leaf_id is None:
                leaf_id = conversation["current_leaf_id"]
            elif self._require_message(db, leaf_id)["conversation_id"] != conversation_id:
                raise ValueError(f"message {leaf_id} is not in conversation {conversation_id}")
            if leaf_id is None:
                return []
            rows = db.execute(
                "WITH RECURSIVE path(id, depth) AS ("
                "  SELECT ?, 0"
                "  UNION ALL"
                "  SELECT m.parent_id, path.depth + 1 FROM messages m JOIN path ON m.id = path.id"
                "  WHERE m.parent_id IS NOT NULL"
                ") SELECT m.* FROM path JOIN messages m ON m.id = path.id ORDER BY path.depth DESC",
                (leaf_id,),
            ).fetchall()
        return [_message(r) for r in rows]

    def messages(self, conversation_id: int) -> list[Message]:
        """Every message of a conversation (all branches), oldest first."""
        with self._read() as db:
            self._require_conversation(db, conversation_id)
            rows = db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        return [_message(r) for r in rows]

    def children(self, message_id: int) -> list[Message]:
        """The direct replies to a message, oldest first."""
        with self._read() as db:
            self._require_message(db, message_id)
            rows = db.execute(
                "SELECT * FROM messages WHERE parent_id = ? ORDER BY id", (message_id,)
            ).fetchall()
        return [_message(r) for r in rows]

    def siblings(self, message_id: int) -> list[Message]:
        """The message and its alternatives (same parent, same conversation), oldest first.

        For ←/→ browsing: ``[m.id for m in siblings(x)].index(x)`` is the position shown as
        "2/3"; pass a neighbour to :meth:`select_branch`.
        """
        with self._read() as db:
            row = self._require_message(db, message_id)
            rows = db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? AND parent_id IS ? ORDER BY id",
                (row["conversation_id"], row["parent_id"]),
            ).fetchall()
        return [_message(r) for r in rows]

    def select_branch(self, message_id: int) -> int:
        """Show the branch through ``message_id``: the current leaf becomes the newest message
        below it (where that branch was last continued). Returns the new leaf's id."""
        with self._write() as db:
            row = self._require_message(db, message_id)
            leaf = db.execute(
                "WITH RECURSIVE below(id) AS ("
                "  SELECT ? UNION ALL SELECT m.id FROM messages m JOIN below ON m.parent_id = below.id"
                ") SELECT max(id) FROM below",
                (message_id,),
            ).fetchone()[0]
            db.execute(
                "UPDATE conversations SET current_leaf_id = ? WHERE id = ?",
                (leaf, row["conversation_id"]),
            )
            return int(leaf)

    def select_sibling(self, message_id: int, step: int) -> int | None:
        """Move ``step`` siblings from ``message_id`` (-1: ←, +1: →) and show that branch.

        Returns the new leaf id, or ``None`` (nothing changed) past the first or last sibling.
        """
        ids = [m.id for m in self.siblings(message_id)]
        index = ids.index(message_id) + step
        if not 0 <= index < len(ids):
            return None
        return self.select_branch(ids[index])

    def set_current_leaf(self, message_id: int) -> None:
        """Make exactly this message the end of its conversation's shown thread."""
        with self._write() as db:
            row = self._require_message(db, message_id)
            db.execute(
                "UPDATE conversations SET current_leaf_id = ? WHERE id = ?",
                (message_id, row["conversation_id"]),
            )

    def delete_message(self, message_id: int) -> None:
        """Delete a message and everything below it (e.g. "remove last turn": delete the
        turn's user message). If the shown thread ran through it, it now ends at the parent
        (or, for a root, at the newest remaining message)."""
        with self._write() as db:
            row = self._require_message(db, message_id)
            conversation_id = row["conversation_id"]
            leaf = db.execute(
                "SELECT current_leaf_id FROM conversations WHERE id = ?", (conversation_id,)
            ).fetchone()[0]
            below = {
                r[0]
                for r in db.execute(
                    "WITH RECURSIVE below(id) AS ("
                    "  SELECT ? UNION ALL"
                    "  SELECT m.id FROM messages m JOIN below ON m.parent_id = below.id"
                    ") SELECT id FROM below",
                    (message_id,),
                )
            }
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))
            if leaf is None or leaf in below:
                new_leaf = row["parent_id"]
                if new_leaf is None:
                    new_leaf = db.execute(
                        "SELECT max(id) FROM messages WHERE conversation_id = ?",
                        (conversation_id,),
                    ).fetchone()[0]
                db.execute(
                    "UPDATE conversations SET current_leaf_id = ?, updated_at = ? WHERE id = ?",
                    (new_leaf, time.time(), conversation_id),
                )

    # ---- search

    def search(
        self,
        query: str,
        *,
        limit: int = 50,
        include_archived: bool = True,
        raw: bool = False,
        prefix: bool = True,
        mark: tuple[str, str] = ("[", "]"),
    ) -> list[SearchHit]:
        """Full-text search over message text, best match first (a user's own words rank
        above replies that match as well).

        ``query`` is plain words (all must occur; see :func:`fts_query`); with ``raw=True`` it
        is FTS5 query syntax, and a malformed one raises :class:`UserError`. Matches in the
        snippet are wrapped in ``mark``.
        """
        match = query.strip() if raw else fts_query(query, prefix=prefix)
        if not match:
            return []
        archived = "" if include_archived else "AND c.archived = 0"
        sql = (
            "SELECT m.id, m.conversation_id, m.role, c.title,"
            " snippet(messages_fts, 0, ?, ?, '…', 16) AS snippet"
            " FROM messages_fts"
            " JOIN messages m ON m.id = messages_fts.rowid"
            " JOIN conversations c ON c.id = m.conversation_id"
            f" WHERE messages_fts MATCH ? {archived}"
            " ORDER BY bm25(messages_fts) * (CASE m.role WHEN 'user' THEN 2.0 ELSE 1.0 END),"
            " m.id DESC LIMIT ?"
        )
        try:
            rows = self._query(sql, (mark[0], mark[1], match, limit))
        except sqlite3.OperationalError as exc:
            if raw:
                raise UserError(f"bad search query {query!r}: {exc}") from exc
            raise
        return [
            SearchHit(
                conversation_id=r["conversation_id"],
                message_id=r["id"],
                snippet=r["snippet"],
                role=r["role"],
                title=r["title"],
            )
            for r in rows
        ]
