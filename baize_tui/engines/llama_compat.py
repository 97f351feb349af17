"""Every use of llama-cpp-python's internals, in one module, each with a guarded fallback.

Checked against the llama-cpp-python versions in ``pyproject.toml`` (0.3.16 to 0.3.36). A newer
release may move one of these; the engine must then still load a model and chat, at worst
with llama.cpp's log lines on stderr or without the count of evaluated tokens.
:data:`PRIVATE_NAMES` lists each name, and ``tests/test_private_api.py`` fails, naming it,
when an upgrade moves one.

- ``llama_cpp.llama_log_callback`` / ``llama_cpp.llama_log_set`` (the low-level C binding):
  llama.cpp's log goes to Python ``logging`` (:func:`route_llama_logs`); without them it
  stays on the library's own callback.
- the module global ``sys`` of ``llama_cpp.llama``: its verbose ``print(file=sys.stderr)``
  calls during a load go to the log (:func:`library_prints_to_log`); without it, to stderr.
- ``Llama.eval``, the one place llama-cpp-python feeds tokens to ``llama_decode``: wrapped
  per model to count the tokens really decoded (:func:`count_evaluated`); without it the
  count stays 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

log = logging.getLogger("baize_tui.llama_cpp")

#: Every llama-cpp-python name used here beyond its documented ``Llama`` API:
#: (module, attribute path).
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("llama_cpp", "llama_log_callback"),
    ("llama_cpp", "llama_log_set"),
    ("llama_cpp.llama", "sys"),
    ("llama_cpp", "Llama.eval"),
)

# ggml.h: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continues the last line).
# (llama-cpp-python 0.3.36's own _logger.py still maps the older order, so its "warnings"
# are really llama.cpp's info lines.)
_LEVELS = {0: logging.INFO, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING,
           4: logging.ERROR}
_log_state: dict[str, Any] = {"callback": None, "buffer": "", "level": logging.DEBUG}
_log_lock = threading.Lock()
_load_lock = threading.Lock()  # one load at a time: the print redirection below is per module


def _emit_log(level: int, text: str) -> None:
    """Buffer llama.cpp's log text and send whole lines to Python logging."""
    with _log_lock:
        if level != 5:
            _log_state["level"] = _LEVELS.get(level, logging.DEBUG)
        buffer = _log_state["buffer"] + text
        *lines, _log_state["buffer"] = buffer.split("\n")
        record_level = _log_state["level"]
    for line in lines:
        if line.strip():
            log.log(record_level, "%s", line.rstrip())


def route_llama_logs() -> None:
    """Send llama.cpp's and ggml's logs to the ``baize_tui.llama_cpp`` logger (idempotent).

    Replaces llama-cpp-python's own callback, which prints to ``sys.stderr`` directly.
    """
    import llama_cpp

    if _log_state["callback"] is not None:
        return
    if not hasattr(llama_cpp, "llama_log_callback") or not hasattr(llama_cpp, "llama_log_set"):
        log.warning("llama-cpp-python has no llama_log_set: llama.cpp logs to stderr")
        return

    def on_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        try:
            _emit_log(level, text.decode("utf-8", errors="replace"))
        except Exception:  # never let logging raise into C
            pass

    from baize_tui.shutdown import register_foreign_callback

    register_foreign_callback(on_log)  # a SIGTERM landing here is delivered again, not lost
    callback = llama_cpp.llama_log_callback(on_log)
    _log_state["callback"] = callback  # keep the ctypes thunk alive
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


class _LogWriter(io.TextIOBase):
    """A text stream that forwards whole lines to a logger (for the library's prints)."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self._logger, self._level, self._buffer = logger, level, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            if line.strip():
                self._logger.log(self._level, "%s", line)
        return len(text)


class _SysWithStderr:
    """Stands in for ``sys`` inside llama_cpp.llama during a load: only ``stderr`` differs."""

    def __init__(self, real: Any, stderr: io.TextIOBase) -> None:
        self._real, self.stderr = real, stderr

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@contextlib.contextmanager
def library_prints_to_log() -> Iterator[None]:
    """Route llama_cpp.llama's ``print(..., file=sys.stderr)`` calls into logging.

    Only that module's global ``sys`` name is swapped, never the process's ``sys.stderr``
    or its file descriptors, so other threads (a UI) keep their output.
    """
    import llama_cpp.llama as llama_module

    with _load_lock:
        real = getattr(llama_module, "sys", None)
        if real is None:  # no module-level sys to swap: its prints go to stderr
            yield
            return
        llama_module.sys = _SysWithStderr(  # type: ignore[assignment]  # a stand-in for sys
            real, _LogWriter(log, logging.DEBUG))
        try:
            yield
        finally:
            llama_module.sys = real


class EngineClosing(Exception):
    """Raised between a prompt's batches when the engine is closing (see count_evaluated)."""


def count_evaluated(llm: Any, engine: Any) -> bool:
    """Add the number of tokens each ``llm.eval`` decodes to ``engine.evaluated_total``.

    A long prompt is fed one batch (``llm.n_batch`` tokens) at a time, which is what
    ``Llama.eval`` does inside anyway; between batches, when ``engine._closing`` is set,
    :class:`EngineClosing` is raised so that closing waits for one batch, not the whole
    prompt. False (and nothing counted) when this llama-cpp-python has no ``Llama.eval``."""
    class_eval = getattr(type(llm), "eval", None)
    if not callable(class_eval):
        log.warning("llama-cpp-python has no Llama.eval: evaluated tokens are not counted")
        return False
    # Weak references only: the engine holds the model, and the model holds this patched
    # eval, so a strong reference to either would keep a dropped model until a GC cycle.
    llm_ref, engine_ref = weakref.ref(llm), weakref.ref(engine)

    def counting_eval(tokens: Sequence[int]) -> None:
        model = llm_ref()
        step = max(1, int(getattr(model, "n_batch", 0) or len(tokens) or 1))
        for start in range(0, len(tokens), step):
            engine = engine_ref()
            closing = getattr(engine, "_closing", None)
            if start and closing is not None and closing.is_set():
                raise EngineClosing("the engine is closing")
            chunk = tokens[start:start + step]
            class_eval(model, chunk)
            if engine is not None:
                engine.evaluated_total += len(chunk)

    llm.eval = counting_eval
    return True
