"""Checks on model files before anything opens them, and their messages.

* :func:`ensure_regular_file`: a FIFO named ``x.gguf`` would block an open forever, and a
  device is no model; anything that is not a regular file is refused first.
* :func:`model_problem`: a GGUF with a valid header but no tensors or no architecture is not
  a model (``models list`` marks it broken, ``models default`` refuses it).
* :func:`context_facts` / :func:`check_context_fits`: the KV cache a context size needs,
  refused with the size asked for when it exceeds the machine's memory.
* :func:`check_hub_names`: a repo id and file name that can only name a hub file
  (no ``..``, no absolute path), refused before any hub call.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from baize_tui.errors import UserError

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def ensure_regular_file(path: Path, what: str = "model file") -> None:
    """Raise :class:`UserError` when ``path`` (links followed) exists but is not a regular file."""
    from baize_tui.safe_write import ensure_regular_input, file_kind

    ensure_regular_input(path, what, "give the path of a .gguf file")
    if file_kind(Path(path).resolve()) == "a directory":
        raise UserError(f"{path}: is a directory, not a regular file; give the path of a .gguf "
                        "file")


def model_problem(header: dict[str, Any]) -> str | None:
    """Why a readable GGUF header is still no usable model or adapter, or None."""
    if not header.get("n_tensors"):
        return "no tensors: the file holds metadata only, not a model"
    if header.get("type") != "adapter" and not header.get("architecture"):
        return "no general.architecture key: not a model llama.cpp can load"
    return None


def context_facts(header: Any) -> dict[str, int]:
    """From a :class:`~baize_tui.gguf_header.GGUFHeader`: the KV-cache bytes per token (f16)."""
    def num(key: str) -> int:
        value = header.get(key.replace("{arch}", str(header.architecture or "")))
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0

    layers = num("{arch}.block_count")
    embd = num("{arch}.embedding_length")
    heads = num("{arch}.attention.head_count") or 1
    kv_heads = num("{arch}.attention.head_count_kv") or heads
    kv_dim = embd * kv_heads // heads if heads else embd
    return {"kv_bytes_per_token": 2 * layers * kv_dim * 2}  # K and V, 2 bytes each (f16)


def total_memory() -> int | None:
    """This machine's physical memory in bytes, if the platform says."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def check_context_fits(path: Path, n_ctx: int, info: dict[str, Any]) -> None:
    """Refuse a context size whose KV cache alone exceeds this machine's memory."""
    from baize_tui.formatting import human_bytes

    if n_ctx < 1:
        raise UserError(f"--n-ctx {n_ctx}: the context size must be at least 1 token")
    per_token = int(info.get("kv_bytes_per_token") or 0)
    memory = total_memory()
    if not per_token or not memory:
        return
    needed = per_token * n_ctx
    if needed > memory:
        trained = info.get("context_length") or "?"
        raise UserError(
            f"{path}: a context of {n_ctx:,} tokens is too large for memory: its KV cache alone "
            f"needs about {human_bytes(needed)}, this machine has {human_bytes(memory)} "
            f"(the model was trained on {trained} tokens); ask for a smaller --n-ctx"
        )


def load_failure(path: Path, exc: BaseException, n_ctx: int, trained: int) -> str:
    """The message when llama.cpp fails to load: too large a context, or a damaged file."""
    if trained and n_ctx > trained:
        return (f"{path}: llama.cpp could not set up a context of {n_ctx:,} tokens ({exc}); it is "
                f"probably too large for memory (the model was trained on {trained:,}); ask for "
                "a smaller --n-ctx")
    return (f"{path}: llama.cpp could not load this model ({exc}); the file may be damaged or "
            "from a newer llama.cpp")


def check_hub_names(repo: str, filename: str | None = None) -> None:
    """Raise :class:`UserError` unless ``repo`` is a hub repo id and ``filename`` a relative
    path inside a repo (``models pull ../../etc/passwd x.gguf`` is refused here)."""
    if not _REPO_ID.match(repo) or ".." in repo or "--" in repo:
        raise UserError(f"{repo!r}: not a Hugging Face repo id; give OWNER/NAME "
                        "(letters, digits, '-', '_', '.')")
    if filename is not None:
        parts = filename.replace("\\", "/").split("/")
        if filename.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise UserError(f"{filename!r}: not a file name inside the repo; give a path such as "
                            "model-q4_0.gguf")
