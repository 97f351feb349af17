"""Whether llama.cpp can load a GGUF's vocabulary, checked once per file version.

A GGUF whose vocabulary is mis-described (byte-level BPE tokens written as sentencepiece, as
older converters did) makes llama.cpp abort the whole process while tokenizing
(``std::out_of_range``): no exception reaches Python. So the check runs in a child process
(``baize_convert.probe``), and its verdict is cached by path, size and mtime, in memory and in
``vocab-checks.json`` in the cache directory, so each file version is probed once.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from baize_tui.paths import get_paths

CACHE_NAME = "vocab-checks.json"
_memory: dict[tuple[str, int, int], str | None] = {}
_lock = threading.Lock()


def _key(path: Path) -> tuple[str, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)


def _cache_path() -> Path:
    return get_paths().cache_dir / CACHE_NAME


def _read_disk() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_disk(key: tuple[str, int, int], error: str | None) -> None:
    data = _read_disk()
    data[key[0]] = {"size": key[1], "mtime_ns": key[2], "error": error}
    path = _cache_path()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a cache only: the check runs again next time


def cached_vocab_error(path: Path) -> tuple[bool, str | None]:
    """(known, error) from the cache alone; never starts a probe."""
    key = _key(path)
    if key is None:
        return False, None
    with _lock:
        if key in _memory:
            return True, _memory[key]
    entry = _read_disk().get(key[0])
    if isinstance(entry, dict) and (entry.get("size"), entry.get("mtime_ns")) == key[1:]:
        error = entry.get("error")
        with _lock:
            _memory[key] = error if isinstance(error, str) else None
        return True, _memory[key]
    return False, None


def vocab_error(path: Path) -> str | None:
    """None when llama.cpp loads ``path``'s vocabulary and tokenizes with it, else why not.

    Probes in a child process the first time a file version is seen (about a second).
    """
    known, error = cached_vocab_error(path)
    if known:
        return error
    key = _key(path)
    if key is None:
        return None  # unreadable: the caller's own open reports that
    from baize_convert.probe import probe_vocab

    result = probe_vocab(path)
    error = None if result.ok else result.reason
    with _lock:
        _memory[key] = error
    _write_disk(key, error)
    return error
