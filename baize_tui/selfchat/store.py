"""A self-chat run directory: append-only JSONL files and the run config.

``OUT/raw.jsonl``
    one line per finished, accepted dialogue, appended (one ``write``) as it finishes.
``OUT/failed.jsonl``
    one line per failed or rejected dialogue: ``reason``, ``retryable``, error text, and the
    transcript when there was one (it was paid for).
``OUT/state.json``
    the run config (never the API key), written atomically.
``OUT/events.log``
    retries, pauses and errors, one line each (never the API key).

Opening a store reads the JSONL files back: a torn last line (a crash mid-write) is cut off
before anything is appended, bad lines in the middle are skipped with a warning, and the ids
found tell the runner what is done.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed, UserError
from baize_tui.redact import scrub

RAW = "raw.jsonl"
FAILED = "failed.jsonl"
STATE = "state.json"
EVENTS = "events.log"


def repair_jsonl(path: Path, *, truncate: bool = True) -> tuple[list[dict[str, Any]], list[str]]:
    """Read a JSONL file, truncating a torn or unparsable last line in place.

    Returns the records and warnings (about bad lines in the middle, which are skipped, and
    about a truncated tail). ``truncate=False`` only ignores the tail (for readers such as
    ``status`` that may run beside a live run).
    """
    warnings: list[str] = []
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], warnings
    records: list[dict[str, Any]] = []
    good_end = 0
    pos = 0
    lines = data.split(b"\n")
    for n, line in enumerate(lines, 1):
        end = pos + len(line) + 1  # including the newline
        is_last_piece = n == len(lines)
        if is_last_piece:  # bytes after the final newline: a torn write
            if line.strip():
                warnings.append(f"{path.name}: dropped a torn last line ({len(line)} bytes)")
            break
        if line.strip():
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
            except ValueError:
                if n == len(lines) - 1:  # the last complete line is bad: drop it too
                    warnings.append(f"{path.name}: dropped an unparsable last line {n}")
                    break
                warnings.append(f"{path.name}:{n}: skipped an unparsable line")
                pos = end
                good_end = end
                continue
            records.append(rec)
        pos = end
        good_end = end
    if truncate and good_end < len(data):
        with path.open("r+b") as fh:
            fh.truncate(good_end)
    return records, warnings


class JsonlAppender:
    """Appends JSON lines with one ``os.write`` each (O_APPEND), optionally ``fsync``ed."""

    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        try:
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OperationFailed(f"{path}: cannot open for writing ({exc.strerror})") from None

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line."""
        if self._fd is None:
            raise OperationFailed(f"{self.path}: already closed")
        record = scrub(record)  # no registered key or URL credential reaches the file
        data = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError as exc:
            raise OperationFailed(f"{self.path}: write failed ({exc.strerror}); the run stopped, "
                                  "re-run the same command to resume") from None

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_run_dir(directory: Path) -> int:
    """Hold ``OUT/.lock`` for as long as a run writes here: two runs in one directory would
    ask (and pay for) the same seeds twice. The lock dies with the process, so a killed run
    never leaves the directory locked."""
    import fcntl

    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"{directory}: another self-chat run is writing here; wait for it or "
                        "stop it (or use another --out)") from None
    return fd


class RunStore:
    """The files of one run directory, opened for resume (or ``readonly`` for reports)."""

    def __init__(self, out: Path | str, *, fsync: bool = False, create: bool = True,
                 readonly: bool = False) -> None:
        self.dir = Path(out).expanduser()
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"{self.dir}: exists and is not a directory; choose another --out")
        if create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                from baize_tui.safe_write import describe_os_error

                raise OperationFailed(describe_os_error(self.dir, exc, "cannot create the run "
                                                        "directory")) from None
        elif not self.dir.is_dir():
            raise UserError(f"{self.dir}: no such run directory")
        self._lock_fd: int | None = None
        if not readonly:
            self._lock_fd = _lock_run_dir(self.dir)
        self.fsync = fsync
        self.warnings: list[str] = []
        self.raw_records, w1 = repair_jsonl(self.raw_path, truncate=not readonly)
        self.failed_records, w2 = repair_jsonl(self.failed_path, truncate=not readonly)
        self.warnings += w1 + w2
        self._raw: JsonlAppender | None = None
        self._failed: JsonlAppender | None = None
        self._events: Any = None

    # paths ---------------------------------------------------------------------------
    @property
    def raw_path(self) -> Path:
        """``OUT/raw.jsonl``."""
        return self.dir / RAW

    @property
    def failed_path(self) -> Path:
        """``OUT/failed.jsonl``."""
        return self.dir / FAILED

    @property
    def state_path(self) -> Path:
        """``OUT/state.json``."""
        return self.dir / STATE

    @property
    def events_path(self) -> Path:
        """``OUT/events.log``."""
        return self.dir / EVENTS

    # reading -------------------------------------------------------------------------
    def done_ids(self) -> set[str]:
        """Ids of seeds with a finished dialogue."""
        return {r["id"] for r in self.raw_records if "id" in r}

    def latest_failures(self) -> dict[str, dict[str, Any]]:
        """The last failure per seed id, for seeds that are not done."""
        done = self.done_ids()
        out: dict[str, dict[str, Any]] = {}
        for rec in self.failed_records:
            sid = rec.get("id")
            if sid and sid not in done:
                out[sid] = rec
        return out

    def unique_done(self) -> Iterator[dict[str, Any]]:
        """Finished dialogues in file order, the first record per id."""
        seen: set[Any] = set()
        for rec in self.raw_records:
            sid = rec.get("id")
            if sid in seen:
                continue
            seen.add(sid)
            yield rec

    def read_state(self) -> dict[str, Any] | None:
        """The saved run config, or ``None`` for a new directory."""
        try:
            return json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError:
            raise OperationFailed(f"{self.state_path}: corrupt; delete it to start the run "
                                  "config afresh (raw.jsonl is kept)") from None

    def write_state(self, state: dict[str, Any]) -> None:
        """Save the run config atomically."""
        try:
            atomic_write_text(self.state_path, json.dumps(state, indent=2, ensure_ascii=False) + "\n")
        except OSError as exc:
            raise OperationFailed(f"{self.state_path}: cannot write ({exc.strerror})") from None

    # writing -------------------------------------------------------------------------
    def append_done(self, record: dict[str, Any]) -> None:
        """Append a finished dialogue to raw.jsonl."""
        if self._raw is None:
            self._raw = JsonlAppender(self.raw_path, fsync=self.fsync)
        self._raw.append(record)
        self.raw_records.append(record)

    def append_failed(self, record: dict[str, Any]) -> None:
        """Append a failure or rejection to failed.jsonl."""
        if self._failed is None:
            self._failed = JsonlAppender(self.failed_path, fsync=self.fsync)
        self._failed.append(record)
        self.failed_records.append(record)

    def log_event(self, message: str) -> None:
        """Append a timestamped line to events.log."""
        if self._events is None:
            self._events = self.events_path.open("a", encoding="utf-8")
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self._events.write(f"{stamp} {message}\n")
        self._events.flush()

    def close(self) -> None:
        """Close every open file (and let another run use the directory)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        for appender in (self._raw, self._failed):
            if appender is not None:
                appender.close()
        self._raw = self._failed = None
        if self._events is not None:
            self._events.close()
            self._events = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
