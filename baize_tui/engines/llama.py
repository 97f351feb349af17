"""The default engine: a GGUF file run by llama.cpp (through llama-cpp-python).

Facts this module is built on (llama-cpp-python 0.3.x, checked against 0.3.36):

- ``Llama(verbose=False)`` wraps model loading in ``suppress_stdout_stderr``, which
  ``dup2``s file descriptors 1 and 2 onto /dev/null for the whole process while the model
  loads. Measured: a log callback running during the load sees ``/proc/self/fd/2`` (and 1)
  pointing at ``/dev/null``; with ``verbose=True`` it never does. A UI drawing from another
  thread during a load loses its frames. So this engine loads with ``verbose=True`` and
  instead routes llama.cpp's C log callback into Python ``logging`` (logger
  ``baize_tui.llama_cpp``), captures the library's own verbose ``print``\\ s into the same
  logger, and turns verbose off once loaded.
- ``create_completion(seed=None)`` reuses the same seed every call (derived from the
  constructor's fixed seed), so "no seed" would repeat replies: a fresh seed is drawn per
  turn instead, and reported in the stats.
- ``generate`` keeps the evaluated tokens and reuses the longest common prefix on the next
  call, so a conversation that only grows costs only its new tokens per turn. The count of
  tokens actually decoded is taken at ``Llama.eval``, the one place llama-cpp-python feeds
  tokens to ``llama_decode``.
- A stopping criterion that fires reports ``finish_reason="stop"``: cancellation is
  recorded here, not taken from the library.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from baize_tui.engines.base import (
    PromptEngine,
    SamplingParams,
    TurnStats,
)
from baize_tui.errors import OperationFailed, UserError

log = logging.getLogger("baize_tui.llama_cpp")

SUPPORTED_ARCHITECTURES = ("llama",)
GGUF_MAGIC = b"GGUF"

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

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        try:
            _emit_log(level, text.decode("utf-8", errors="replace"))
        except Exception:  # never let logging raise into C
            pass

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
def _library_prints_to_log() -> Iterator[None]:
    """Route llama_cpp.llama's ``print(..., file=sys.stderr)`` calls into logging.

    Only that module's global ``sys`` name is swapped, never the process's ``sys.stderr``
    or its file descriptors, so other threads (a UI) keep their output.
    """
    import llama_cpp.llama as llama_module

    with _load_lock:
        real = llama_module.sys
        llama_module.sys = _SysWithStderr(real, _LogWriter(log, logging.DEBUG))
        try:
            yield
        finally:
            llama_module.sys = real


def physical_cores() -> int:
    """Physical CPU cores available to this process (llama.cpp's best thread count)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    physical = None
    try:
        import psutil  # optional

        physical = psutil.cpu_count(logical=False)
    except ImportError:
        try:
            cores: set[tuple[str, str]] = set()
            phys = core = ""
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and core:
                    cores.add((phys, core))
                    core = ""
            if core:
                cores.add((phys, core))
            physical = len(cores) or None
        except OSError:
            physical = None
    return max(1, min(usable, physical or max(1, usable // 2) or 1))


def inspect_gguf(path: Path) -> dict[str, Any]:
    """Check that ``path`` is a GGUF model llama.cpp can chat with; return its key facts.

    Raises :class:`UserError` for a missing file, a non-GGUF file, an adapter GGUF or another
    architecture, and :class:`OperationFailed` for a corrupt file.
    """
    if not path.exists():
        raise UserError(f"{path}: model file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the path of a .gguf file")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise OperationFailed(f"{path}: cannot read the model file ({exc.strerror})") from exc
    if magic != GGUF_MAGIC:
        hint = ""
        if path.suffix in (".bin", ".safetensors", ".pt", ".pth"):
            hint = "; convert Hugging Face weights with `baize-convert merge`"
        elif magic in (b"ggml", b"ggjt", b"ggmf", b"lmgg", b"tjgg", b"fmgg"):
            hint = " (an old GGML file, which llama.cpp no longer loads; re-convert it)"
        raise UserError(f"{path}: not a GGUF file{hint}")
    from baize_tui.gguf_header import GGUFHeaderError, read_header

    try:
        header = read_header(path)
    except GGUFHeaderError as exc:
        raise OperationFailed(f"{path}: unusable GGUF: {exc}") from None
    except OSError as exc:
        raise OperationFailed(f"{path}: cannot read the model file ({exc.strerror})") from None
    arch = str(header.architecture or "")
    info = {
        "architecture": arch,
        "type": header.get("general.type", "model"),
        "name": header.get("general.name", ""),
        "context_length": int(header.get("{arch}.context_length", 0) or 0),
        "file_type": header.get("general.file_type"),
    }
    if info["type"] == "adapter":
        raise UserError(
            f"{path}: a LoRA adapter GGUF, not a model; merge it into its base with "
            f"`baize-convert merge`"
        )
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"{path}: a GGUF of architecture {arch!r}; baize-tui chats with LLaMA-based "
            f"(Baize) models only"
        )
    return info


class LlamaEngine(PromptEngine):
    """A GGUF model in llama.cpp, keeping its KV cache between turns.

    ``n_ctx`` is the model's trained context, capped at ``max_ctx``. Generation is serialised
    (one at a time per engine); the model is memory-mapped.
    """

    takes_messages = False
    engine_label = "llama.cpp"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_ctx: int = 4096,
        n_ctx: int | None = None,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        self.spec = str(self.path)  # absolute, so a saved conversation can be continued anywhere
        self.info = inspect_gguf(self.path)
        trained = self.info["context_length"] or 2048
        self._n_ctx = int(n_ctx or min(trained, max_ctx))
        self.n_threads = n_threads or physical_cores()
        self._lock = threading.Lock()
        self.evaluated_total = 0  # tokens decoded by this engine since load

        from baize_tui.vocab_check import vocab_error

        bad_vocab = vocab_error(self.path)  # a bad vocabulary aborts the process, not raises
        if bad_vocab:
            raise OperationFailed(
                f"{self.path}: llama.cpp cannot use this model's vocabulary ({bad_vocab}); "
                "loading it would crash the program. Convert the model again (baize-convert "
                "merge checks the vocabulary it writes) or choose another model"
            )

        import llama_cpp

        route_llama_logs()
        try:
            with _library_prints_to_log():
                llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=self._n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=n_gpu_layers,
                    use_mmap=True,
                    verbose=True,  # False would dup2 fds 1 and 2 to /dev/null while loading
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise OperationFailed(
                f"{self.path}: llama.cpp could not load this model ({exc}); the file may be "
                f"damaged or from a newer llama.cpp"
            ) from exc
        llm.verbose = False  # no per-call prints or timing resets from here on
        self._llm = llm
        # Weak references only: the engine holds the model, and the model holds this patched
        # eval, so a strong reference to either would keep a dropped model until a GC cycle.
        class_eval = type(llm).eval
        llm_ref, engine_ref = weakref.ref(llm), weakref.ref(self)

        def counting_eval(tokens: Sequence[int]) -> None:
            class_eval(llm_ref(), tokens)
            engine = engine_ref()
            if engine is not None:
                engine.evaluated_total += len(tokens)

        llm.eval = counting_eval  # type: ignore[method-assign]
        log.info("loaded %s: n_ctx=%d threads=%d", self.path, self._n_ctx, self.n_threads)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks and advanced use)."""
        return self._llm

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt, BOS first, exactly as they are fed to the model."""
        # create_completion tokenizes with special=True and prepends BOS when the vocab asks.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def describe(self) -> str:
        name = self.info.get("name") or self.path.stem
        return f"llama.cpp · {name} ({self.path.name}, n_ctx {self._n_ctx}, {self.n_threads} threads)"

    def _pieces(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event,
        stop: Sequence[str],
        stats: TurnStats,
    ) -> Iterator[str]:
        import llama_cpp

        with self._lock:
            tokens = self.tokenize(prompt)
            stats.prompt_tokens = len(tokens)
            if len(tokens) >= self._n_ctx:
                from baize_tui.prompt import ContextOverflow

                raise ContextOverflow(len(tokens) + params.max_new_tokens, self._n_ctx,
                                      prompt_tokens=len(tokens), reserved=params.max_new_tokens)
            if cancel.is_set():  # cancelled before it started: nothing to evaluate
                stats.finish_reason = "cancelled"
                return
            n_prompt = len(tokens)

            over_length = False

            def count_and_check(input_ids: Any, logits: Any) -> bool:
                # Called after each sampled token with the ids evaluated so far (the new
                # token is not among them yet), and once more at the end with the same ids.
                nonlocal over_length
                sampled = len(input_ids) - n_prompt + 1
                if sampled > params.max_new_tokens:
                    # llama-cpp-python skips its max_tokens check while a UTF-8 character
                    # is incomplete, so it can overshoot by a few tokens: stop it here.
                    over_length = True
                    return True
                stats.completion_tokens = max(stats.completion_tokens, sampled)
                return cancel.is_set()

            evaluated_before = self.evaluated_total
            chunks = self._llm.create_completion(
                tokens,
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                min_p=params.min_p,
                repeat_penalty=params.repeat_penalty,
                seed=stats.seed,
                stop=list(stop),
                stream=True,
                stopping_criteria=llama_cpp.StoppingCriteriaList([count_and_check]),
            )
            reason = None
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    reason = choice.get("finish_reason") or reason
                    stats.evaluated_tokens = self.evaluated_total - evaluated_before
                    if choice["text"]:
                        yield choice["text"]
                    if cancel.is_set():
                        break
            finally:
                chunks.close()
                stats.evaluated_tokens = self.evaluated_total - evaluated_before
                if cancel.is_set():
                    stats.finish_reason = "cancelled"
                elif over_length:
                    stats.finish_reason = "length"
                elif reason in ("stop", "length"):
                    # "length" is also what llama-cpp-python reports when max_tokens was
                    # clamped to the context left; both end the reply here.
                    stats.finish_reason = reason

    def close(self) -> None:
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.close()
