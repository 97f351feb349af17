"""The history store's boundary: damage and OS faults in words, and imports within range.

* :func:`check_integrity` runs ``PRAGMA quick_check`` when a store opens, so a damaged file
  is found before anything reads wrong answers from it or writes more into it.
* :func:`db_fault` turns any ``sqlite3`` error into one :class:`OperationFailed` naming the
  file and saying what is wrong: damaged (and how to recover), disk full, read-only, no
  permission, busy. Only a damaged file is ever called damaged.
* :func:`check_conversation_ranges` and :func:`check_message_ranges` hold an import to what the schema and every reader can take:
  finite timestamps within years 1970-9999, counts that fit SQLite's integers, text without
  lone surrogates and within :data:`MAX_TEXT_CHARS`.
* :func:`safe_time` formats a stored timestamp and never raises, so no row can brick a reader.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError

MAX_TIME = 253402300799.0  # 9999-12-31 23:59:59 UTC
MAX_INT = 2**63 - 1
MAX_TEXT_CHARS = 16 * 1024 * 1024
MAX_IMPORT_BYTES = 256 * 1024 * 1024


class DamagedDatabase(OperationFailed):
    """The history file is damaged; the store refuses to read or write it further."""


def damaged_message(path: Path, detail: str) -> str:
    """The one message for a damaged history file, with what to do."""
    return (
        f"{path}: the history database is damaged ({detail}); nothing more will be written to "
        f"it. Save what is left with `sqlite3 {path} .recover > recovered.sql`, then move the "
        "file aside and start afresh"
    )


def open_reason(path: Path) -> str:
    """Why a database at ``path`` cannot be opened, as far as the file system tells."""
    folder = Path(path).parent
    if not folder.is_dir():
        return f"its folder {folder} is missing"
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "the file system is read-only; make it writable to use the history"
    except OSError:
        pass
    if not os.access(folder, os.W_OK) or (Path(path).exists() and not os.access(path, os.W_OK)):
        return "no permission to write it or its folder"
    return "no permission, or its folder is missing or read-only"


def db_fault(path: Path, exc: BaseException) -> OperationFailed:
    """The :class:`OperationFailed` to raise for an sqlite3 error ``exc`` on ``path``."""
    text = str(exc)
    low = text.lower()
    if isinstance(exc, OperationFailed):
        return exc
    if "full" in low:
        return OperationFailed(f"{path}: the disk is full; free some space and try again "
                               "(the history database itself is fine)")
    if "readonly" in low or "read-only" in low:
        return OperationFailed(f"{path}: the history database is read-only (the file or its "
                               "file system); make it writable to save conversations")
    if "unable to open" in low or "permission" in low or "access" in low:
        return OperationFailed(f"{path}: cannot open the history database ({open_reason(path)})")
    if "locked" in low or "busy" in low:
        return OperationFailed(f"{path}: the history database is busy (another process holds "
                               "a lock); try again")
    if "disk i/o" in low:
        return OperationFailed(f"{path}: disk I/O error while using the history database; "
                               "check the disk")
    if isinstance(exc, sqlite3.OperationalError) and "malformed" not in low:
        return OperationFailed(f"{path}: the history database failed ({text})")
    return DamagedDatabase(damaged_message(path, text))


_ENVIRONMENT_WORDS = ("malformed", "not a database", "full", "readonly", "read-only",
                      "unable to open", "disk i/o", "locked", "busy")


def is_store_fault(exc: BaseException) -> bool:
    """Whether an sqlite3 error is about the file or the disk (not about one query's text)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    if not isinstance(exc, sqlite3.OperationalError):
        return True
    low = str(exc).lower()
    return any(word in low for word in _ENVIRONMENT_WORDS)


def check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Raise :class:`DamagedDatabase` unless ``PRAGMA quick_check`` says ``ok``."""
    try:
        rows = db.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.DatabaseError as exc:
        raise db_fault(path, exc) from exc
    problems = [str(r[0]) for r in rows if str(r[0]) != "ok"]
    if problems:
        raise DamagedDatabase(damaged_message(path, "; ".join(problems)[:200]))


def safe_time(timestamp: Any) -> str:
    """A stored Unix time as local ``YYYY-MM-DD HH:MM``; ``????-??-?? ??:??`` if unusable."""
    try:
        return datetime.fromtimestamp(float(timestamp)).strftime("%Y-%m-%d %H:%M")
    except (OverflowError, OSError, ValueError, TypeError):
        return "????-??-?? ??:??"


def _bad(where: str, key: str, value: Any, expected: str) -> UserError:
    from baize_tui.history import ImportFormatError

    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return ImportFormatError(f"{where}.{key}: expected {expected}, got {shown}")


def _check_text(where: str, key: str, value: Any) -> None:
    if not isinstance(value, str):
        return
    if len(value) > MAX_TEXT_CHARS:
        raise _bad(where, key, f"<{len(value):,} characters>",
                   f"at most {MAX_TEXT_CHARS:,} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _bad(where, key, value[max(0, exc.start - 5): exc.start + 1],
                   "text without lone surrogates (\\ud800-\\udfff)") from None


def _check_json(where: str, key: str, value: Any) -> None:
    if value is None:
        return
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        raise _bad(where, key, value, "an object of finite numbers and valid text") from None


def _check_record(where: str, record: dict[str, Any], times: tuple[str, ...],
                  counts: tuple[str, ...], rates: tuple[str, ...], texts: tuple[str, ...]) -> None:
    for key in times:
        v = record.get(key)
        if v is not None and not (math.isfinite(v) and 0 <= v <= MAX_TIME):
            raise _bad(where, key, v, "a Unix time between 0 and 253402300799 (year 9999)")
    for key in counts:
        v = record.get(key)
        if v is not None and not 0 <= v <= MAX_INT:
            raise _bad(where, key, v, f"an integer from 0 to {MAX_INT}")
    for key in rates:
        v = record.get(key)
        if v is not None and not (math.isfinite(v) and 0 <= v <= 1e12):
            raise _bad(where, key, v, "a finite number >= 0")
    for key in texts:
        _check_text(where, key, record.get(key))
    _check_json(where, "params", record.get("params"))


def check_conversation_ranges(conversation: dict[str, Any]) -> None:
    """Raise ``ImportFormatError`` naming the field when a conversation value is out of range."""
    _check_record("conversation", conversation, ("created_at", "updated_at"), (), (),
                  ("title", "system_prompt", "model"))


def check_message_ranges(where: str, message: dict[str, Any]) -> None:
    """Raise ``ImportFormatError`` naming ``where.field`` when a message value is out of range."""
    _check_record(where, message, ("created_at",), ("prompt_tokens", "completion_tokens"),
                  ("ttft_s", "tokens_per_s"), ("text", "model"))
