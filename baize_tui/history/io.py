"""Export and import of conversations: a lossless JSON document (every branch and field;
validated field by field on import, with one error naming the bad field) and Markdown of one
thread.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from baize_tui.history.records import (
    _MESSAGE_FIELDS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    FINISH_REASONS,
    ROLES,
    ImportFormatError,
    Message,
    _conversation,
    _dumps,
    _message,
    _rowid,
    format_time,
)

if TYPE_CHECKING:
    import sqlite3
    from contextlib import AbstractContextManager

    from baize_tui.history.records import Conversation


class ImportExport:
    """Export and import of whole conversations, mixed into
    :class:`~baize_tui.history.store.HistoryStore` (JSON that round-trips every branch and
    field, and Markdown of one thread)."""

    if TYPE_CHECKING:  # provided by HistoryStore
        def _read(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...
        def _query(self, sql: str, args: tuple[Any, ...] | dict[str, Any] = ()) -> list[
            sqlite3.Row]: ...
        def _require_conversation(self, db: sqlite3.Connection,
                                  conversation_id: int) -> sqlite3.Row: ...
        def get_conversation(self, conversation_id: int) -> Conversation: ...
        def thread(self, conversation_id: int, *,
                   leaf_id: int | None = None) -> list[Message]: ...

    def export_json(self, conversation_id: int) -> dict[str, Any]:
        """The whole conversation (every branch, every field) as a JSON-ready dict.

        :meth:`import_json` reads it back losslessly (only ids change).
        """
        with self._read() as db:
            conversation = _conversation(self._require_conversation(db, conversation_id))
            rows = db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        messages = []
        for row in rows:
            record = asdict(_message(row))
            del record["conversation_id"]
            messages.append(record)
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "conversation": asdict(conversation),
            "messages": messages,
        }

    def import_json(self, data: Any) -> int:
        """Store a conversation exported by :meth:`export_json` as a new conversation.

        Returns the new id. Invalid input raises :class:`ImportFormatError` naming the field
        (``messages[3].role: ...``) and stores nothing.
        """
        conversation, messages = _validate_export(data)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO conversations (title, system_prompt, model, params_json, created_at,"
                " updated_at, archived) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    conversation["title"],
                    conversation["system_prompt"],
                    conversation["model"],
                    _dumps(conversation["params"]),
                    conversation["created_at"],
                    conversation["updated_at"],
                    int(conversation["archived"]),
                ),
            )
            new_conversation = _rowid(cursor)
            new_ids: dict[int, int] = {}
            for m in messages:
                cursor = db.execute(
                    f"INSERT INTO messages ({_MESSAGE_FIELDS})"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        new_conversation,
                        None if m["parent_id"] is None else new_ids[m["parent_id"]],
                        m["role"],
                        m["text"],
                        m["created_at"],
                        m["model"],
                        _dumps(m["params"]),
                        m["prompt_tokens"],
                        m["completion_tokens"],
                        m["ttft_s"],
                        m["tokens_per_s"],
                        m["finish_reason"],
                        int(m["complete"]),
                    ),
                )
                new_ids[m["id"]] = _rowid(cursor)
            leaf = conversation["current_leaf_id"]
            if leaf is not None:
                db.execute(
                    "UPDATE conversations SET current_leaf_id = ? WHERE id = ?",
                    (new_ids[leaf], new_conversation),
                )
            return new_conversation

    def export_markdown(self, conversation_id: int, *, leaf_id: int | None = None) -> str:
        """The shown thread (root → current leaf, or → ``leaf_id``) as a Markdown document."""
        conversation = self.get_conversation(conversation_id)
        thread = self.thread(conversation_id, leaf_id=leaf_id)
        branches: dict[int | None, list[int]] = {}
        for row in self._query(
            "SELECT id, parent_id FROM messages WHERE conversation_id = ? ORDER BY id",
            (conversation_id,),
        ):
            branches.setdefault(row["parent_id"], []).append(row["id"])

        lines = [f"# {conversation.display_title}", ""]
        if conversation.model:
            lines.append(f"- Model: `{conversation.model}`")
        lines.append(f"- Created: {format_time(conversation.created_at)}")
        lines.append(f"- Updated: {format_time(conversation.updated_at)}")
        lines.append(f"- Conversation: {conversation.id} (baize-tui)")
        lines.append("")
        if conversation.system_prompt:
            lines += ["## System prompt", "", conversation.system_prompt.rstrip(), ""]
        for message in thread:
            heading = "## User" if message.role == "user" else "## Assistant"
            siblings = branches.get(message.parent_id, [message.id])
            if len(siblings) > 1:
                heading += f" ({siblings.index(message.id) + 1}/{len(siblings)})"
            lines += [heading, "", message.text.rstrip(), ""]
            note = _markdown_note(message)
            if note:
                lines += [f"*{note}*", ""]
        return "\n".join(lines).rstrip() + "\n"


def _markdown_note(message: Message) -> str:
    """The italic line under a message in a Markdown export: how it ended, and its stats."""
    parts: list[str] = []
    if message.finish_reason == "length":
        parts.append("stopped at the length limit")
    elif message.finish_reason == "cancelled":
        parts.append("stopped by the user")
    elif message.finish_reason == "error":
        parts.append("ended with an error")
    elif message.interrupted:
        parts.append("incomplete: the reply was interrupted")
    if message.role == "assistant":
        if message.model:
            parts.append(message.model)
        if message.completion_tokens is not None:
            parts.append(f"{message.completion_tokens} tokens")
        if message.tokens_per_s is not None:
            parts.append(f"{message.tokens_per_s:.1f} tokens/s")
        if message.ttft_s is not None:
            parts.append(f"first token after {message.ttft_s:.2f} s")
    return " · ".join(parts)


# --------------------------------------------------------------------------- import validation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _field(
    record: dict[str, Any],
    where: str,
    key: str,
    check: Callable[[Any], bool],
    expected: str,
    default: Any = ...,
) -> Any:
    if key not in record:
        if default is ...:
            raise ImportFormatError(f"{where}.{key}: missing (expected {expected})")
        return default() if callable(default) else default
    value = record[key]
    if not check(value):
        shown = json.dumps(value, ensure_ascii=False)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise ImportFormatError(f"{where}.{key}: expected {expected}, got {shown}")
    return value


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda value: value is None or check(value)


def _validate_export(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Check an export document; returns (conversation fields, messages sorted by id)."""
    if not isinstance(data, dict):
        raise ImportFormatError("expected a JSON object (a baize-tui conversation export)")
    fmt = data.get("format")
    if fmt != EXPORT_FORMAT:
        raise ImportFormatError(f"format: expected {EXPORT_FORMAT!r}, got {json.dumps(fmt)}")
    version = _field(data, "document", "version", _is_int, "an integer", EXPORT_VERSION)
    if version > EXPORT_VERSION:
        raise ImportFormatError(
            f"version: {version} is newer than this baize-tui reads ({EXPORT_VERSION}); upgrade"
        )
    if "conversation" not in data:
        raise ImportFormatError("conversation: missing (expected an object)")
    conv = data["conversation"]
    if not isinstance(conv, dict):
        raise ImportFormatError("conversation: expected an object")
    is_str = lambda v: isinstance(v, str)  # noqa: E731
    is_dict = lambda v: isinstance(v, dict)  # noqa: E731
    now = time.time()
    conversation = {
        "title": _field(conv, "conversation", "title", _optional(is_str), "a string or null", None),
        "system_prompt": _field(conv, "conversation", "system_prompt", is_str, "a string", ""),
        "model": _field(conv, "conversation", "model", is_str, "a string", ""),
        "params": _field(conv, "conversation", "params", is_dict, "an object", dict),
        "created_at": _field(conv, "conversation", "created_at", _is_number, "a number", now),
        "archived": _field(
            conv, "conversation", "archived", lambda v: isinstance(v, bool), "true or false", False
        ),
    }
    conversation["updated_at"] = _field(
        conv, "conversation", "updated_at", _is_number, "a number", conversation["created_at"]
    )

    raw_messages = data.get("messages", [])
    if not isinstance(raw_messages, list):
        raise ImportFormatError("messages: expected a list")
    entries: list[tuple[dict[str, Any], str]] = []
    seen: set[int] = set()
    for index, raw in enumerate(raw_messages):
        where = f"messages[{index}]"
        if not isinstance(raw, dict):
            raise ImportFormatError(f"{where}: expected an object")
        m = {
            "id": _field(raw, where, "id", _is_int, "an integer"),
            "parent_id": _field(
                raw, where, "parent_id", _optional(_is_int), "an integer or null", None
            ),
            "role": _field(raw, where, "role", lambda v: v in ROLES, " or ".join(map(repr, ROLES))),
            "text": _field(raw, where, "text", is_str, "a string"),
            "created_at": _field(raw, where, "created_at", _is_number, "a number", now),
            "model": _field(raw, where, "model", _optional(is_str), "a string or null", None),
            "params": _field(raw, where, "params", _optional(is_dict), "an object or null", None),
            "prompt_tokens": _field(
                raw, where, "prompt_tokens", _optional(_is_int), "an integer or null", None
            ),
            "completion_tokens": _field(
                raw, where, "completion_tokens", _optional(_is_int), "an integer or null", None
            ),
            "ttft_s": _field(raw, where, "ttft_s", _optional(_is_number), "a number or null", None),
            "tokens_per_s": _field(
                raw, where, "tokens_per_s", _optional(_is_number), "a number or null", None
            ),
            "finish_reason": _field(
                raw,
                where,
                "finish_reason",
                lambda v: v is None or v in FINISH_REASONS,
                "one of " + ", ".join(FINISH_REASONS) + " or null",
                None,
            ),
            "complete": _field(
                raw, where, "complete", lambda v: isinstance(v, bool), "true or false", True
            ),
        }
        if m["id"] in seen:
            raise ImportFormatError(f"{where}.id: {m['id']} appears twice")
        seen.add(m["id"])
        entries.append((m, where))
    # Insert in id order: it preserves which branch is newest, and a parent always has a
    # smaller id than its children (which also rules out cycles).
    pairs = sorted(entries, key=lambda pair: pair[0]["id"])
    placed: set[int] = set()
    for m, where in pairs:
        parent = m["parent_id"]
        if parent is not None and parent not in placed:
            problem = (
                "no message has that id" if parent not in seen else "it is not an older message"
            )
            raise ImportFormatError(
                f"{where}.parent_id: {parent} is not a valid parent ({problem})"
            )
        placed.add(m["id"])
    leaf = _field(
        conv,
        "conversation",
        "current_leaf_id",
        _optional(_is_int),
        "an integer or null",
        lambda: max(seen) if seen else None,
    )
    if leaf is not None and leaf not in seen:
        raise ImportFormatError(f"conversation.current_leaf_id: no message has id {leaf}")
    conversation["current_leaf_id"] = leaf
    return conversation, [m for m, _ in pairs]
