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

import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from baize_tui.engines.base import (
    PromptEngine,
    SamplingParams,
    TurnStats,
)
from baize_tui.engines.llama_compat import (
    EngineClosing as _EngineClosing,
)
from baize_tui.engines.llama_compat import (
    count_evaluated,
    library_prints_to_log,
    route_llama_logs,
)
from baize_tui.errors import OperationFailed, UserError
from baize_tui.procs import physical_cores

__all__ = ["LlamaEngine", "inspect_gguf", "physical_cores", "route_llama_logs"]

log = logging.getLogger("baize_tui.llama_cpp")

SUPPORTED_ARCHITECTURES = ("llama",)
#: after this long, :meth:`LlamaEngine.close` logs that it is still waiting for a native call
CLOSE_WAIT_S = 5.0
GGUF_MAGIC = b"GGUF"

def inspect_gguf(path: Path) -> dict[str, Any]:
    """Check that ``path`` is a GGUF model llama.cpp can chat with; return its key facts.

    Raises :class:`UserError` for a missing file, a non-GGUF file, an adapter GGUF or another
    architecture, and :class:`OperationFailed` for a corrupt file.
    """
    if not path.exists():
        raise UserError(f"{path}: model file not found")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; give the path of a .gguf file")
    from baize_tui.model_checks import context_facts, ensure_regular_file

    ensure_regular_file(path)  # a FIFO would block the open below forever
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
    gguf_info = header.info()
    arch = gguf_info.architecture or ""
    info = {
        "architecture": arch,
        "type": gguf_info.kind,
        "name": gguf_info.name or "",
        "context_length": gguf_info.context_length or 0,
        "file_type": gguf_info.file_type,
        **context_facts(header),
    }
    if info["type"] == "adapter":
        raise UserError(
            f"{path}: a LoRA adapter GGUF, not a model; merge it into its base with "
            f"`baize-convert merge`, or chat with it on its base: -m BASE.gguf --lora {path.name}"
        )
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UserError(
            f"{path}: a GGUF of architecture {arch!r}; baize-tui chats with LLaMA-based "
            f"(Baize) models only"
        )
    return info


def check_lora_gguf(path: Path) -> Path:
    """``path`` if it is a GGUF LoRA adapter (``general.type`` adapter), else a
    :class:`UserError` saying what it is and what to do."""
    if not path.is_file():
        raise UserError(f"{path}: LoRA adapter file not found")
    from baize_tui.gguf_header import GGUFHeaderError, read_header

    try:
        header = read_header(path)
    except (GGUFHeaderError, OSError) as exc:
        raise UserError(f"{path}: not a GGUF LoRA adapter ({exc}); export one with "
                        f"`baize-convert lora`") from None
    if header.get("general.type", "model") != "adapter":
        raise UserError(f"{path}: a model, not a LoRA adapter; give it with -m, and an "
                        f"adapter made by `baize-convert lora` with --lora")
    return path


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
        lora: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = Path(path).expanduser().absolute()
        #: a GGUF LoRA adapter applied on top at load (llama.cpp's adapter support)
        self.lora = check_lora_gguf(Path(lora).expanduser().absolute()) if lora else None
        self.spec = str(self.path)  # absolute, so a saved conversation can be continued anywhere
        self.info = inspect_gguf(self.path)
        if self.lora is not None:  # made for this model? (llama.cpp would only say "failed")
            from baize_tui.engines.lora_match import check_lora_matches

            check_lora_matches(self.path, self.lora)
        trained = self.info["context_length"] or 2048
        self._n_ctx = int(n_ctx or min(trained, max_ctx))
        from baize_tui.model_checks import check_context_fits, load_failure

        check_context_fits(self.path, self._n_ctx, self.info)
        self.n_threads = n_threads or physical_cores()
        self._lock = threading.Lock()  # one generation at a time (held while it is open)
        #: held around every call into llama.cpp that uses the context (a prompt batch, one
        #: token's decode + sample): close() takes it, so it never frees a context in use
        self._native = threading.Lock()
        self._closing = threading.Event()  # set by close(): generations stop at the next step
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
            with library_prints_to_log():
                llm = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=self._n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    n_gpu_layers=n_gpu_layers,
                    use_mmap=True,
                    lora_path=str(self.lora) if self.lora else None,
                    verbose=True,  # False would dup2 fds 1 and 2 to /dev/null while loading
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise OperationFailed(load_failure(self.path, exc, self._n_ctx, trained)) from exc
        llm.verbose = False  # no per-call prints or timing resets from here on
        self._llm: Any = llm
        count_evaluated(llm, self)
        import llama_cpp as _lc

        self._vocab = _lc.llama_model_get_vocab(llm.model)
        self._pieces_cache: dict[int, bytes] = {}
        self._ends: dict[int, bool] = {}  # token id -> end of generation (EOS, EOT, …)
        self._last_prompt: list[int] = []
        meta = llm.metadata or {}
        bos_id = int(meta.get("tokenizer.ggml.bos_token_id", -1) or -1)
        self._bos_text = self._piece_text(bos_id) if bos_id >= 0 else ""
        log.info("loaded %s: n_ctx=%d threads=%d", self.path, self._n_ctx, self.n_threads)

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def llama(self) -> Any:
        """The underlying ``llama_cpp.Llama`` (for benchmarks and advanced use)."""
        return self._llm

    def _piece_text(self, token: int) -> str:
        import llama_cpp

        raw = llama_cpp.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    @property
    def _kv_tokens(self) -> list[int]:
        """The tokens whose keys and values the context holds now, in order."""
        llm = self._llm
        return [int(t) for t in llm.input_ids[: llm.n_tokens]]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt, BOS first, exactly as they are fed to the model.

        Special tokens are parsed as specials. BOS is prepended when the vocab asks for it,
        unless the text (a chat template's rendering) already starts with it.
        """
        add_bos = not (self._bos_text and text.startswith(self._bos_text))
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def describe(self) -> str:
        name = self.info.get("name") or self.path.stem
        lora = f" + {self.lora.name}" if self.lora else ""
        return (f"llama.cpp · {name}{lora} ({self.path.name}, n_ctx {self._n_ctx}, "
                f"{self.n_threads} threads)")

    def _pieces(
        self,
        prompt: str,
        params: SamplingParams,
        cancel: threading.Event,
        stop: Sequence[str],
        stats: TurnStats,
    ) -> Iterator[str]:
        with self._lock:
            with self._native:
                if self._closing.is_set():
                    raise OperationFailed("the model was closed")
                tokens = self.tokenize(prompt)
            stats.prompt_tokens = len(tokens)
            room = self._n_ctx - len(tokens)
            if room <= 0:
                from baize_tui.prompt import ContextOverflow

                raise ContextOverflow(len(tokens) + params.max_new_tokens, self._n_ctx,
                                      prompt_tokens=len(tokens), reserved=params.max_new_tokens)
            if cancel.is_set():  # cancelled before it started: nothing to evaluate
                stats.finish_reason = "cancelled"
                return
            self._check_reuse(tokens, stats)
            evaluated_before = self.evaluated_total
            yield from self._decode(tokens, params, min(params.max_new_tokens, room),
                                    self.stop_token_ids(stop), cancel, stats)
            stats.evaluated_tokens = self.evaluated_total - evaluated_before

    def _check_reuse(self, tokens: list[int], stats: TurnStats) -> None:
        """Record how much of ``tokens`` the KV cache holds, and whether the prompt extends
        the previous one (a template that rewrites earlier turns defeats the cache)."""
        cached = self._kv_tokens
        reused = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            reused += 1
        stats.reused_tokens = reused
        last = self._last_prompt
        if last and tokens[:len(last)] != last:
            stats.kv_note = (
                f"the prompt does not extend the previous one (KV cache reused {reused} of "
                f"{len(tokens)} prompt tokens): the chat format rewrote earlier turns, or "
                f"another conversation ran in between")
        self._last_prompt = list(tokens)

    def _decode(self, tokens: list[int], params: SamplingParams, limit: int,
                stop_ids: frozenset[int], cancel: threading.Event,
                stats: TurnStats) -> Iterator[str]:
        """Sample token by token; text is decoded incrementally (cost flat per token).

        Only an incomplete UTF-8 sequence (at most 3 bytes) is ever held back; bytes that
        can never complete become U+FFFD at once. Each step into llama.cpp (the prompt's
        batches, then one token's decode + sample) runs under ``_native`` and first checks
        that the engine is not closing, so :meth:`close` never frees the context under it.
        """
        import codecs

        llm = self._llm
        llm.set_seed(int(stats.seed or 0))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        piece, is_end, native, closing = self._piece, self._is_end, self._native, self._closing
        sampled = 0
        tokens_out = llm.generate(
            tokens, top_k=params.top_k, top_p=params.top_p, min_p=params.min_p,
            temp=params.temperature, repeat_penalty=params.repeat_penalty,
        )
        try:
            while True:
                with native:
                    if closing.is_set():
                        stats.finish_reason = "cancelled"
                        break
                    try:
                        token = next(tokens_out)
                    except StopIteration:
                        break
                    except _EngineClosing:
                        stats.finish_reason = "cancelled"
                        break
                if token in stop_ids or is_end(token):
                    stats.finish_reason = "stop"
                    break
                sampled += 1
                stats.completion_tokens = sampled
                text = decoder.decode(piece(token))
                if text:
                    yield text
                if cancel.is_set():
                    stats.finish_reason = "cancelled"
                    break
                if sampled >= limit:
                    stats.finish_reason = "length"
                    break
        finally:
            tokens_out.close()  # llama-cpp-python's generate: no native call on close
        tail = decoder.decode(b"", final=True)
        if tail:
            yield tail

    def _is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation for the vocabulary (EOS, EOT …), cached per id."""
        end = self._ends.get(token)
        if end is None:
            import llama_cpp

            end = self._ends[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return end

    def _piece(self, token: int) -> bytes:
        """The bytes of one token (specials as nothing), cached per id."""
        cached = self._pieces_cache.get(token)
        if cached is None:
            import ctypes

            import llama_cpp

            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
                if n >= 0:
                    break
                size = -n
            cached = self._pieces_cache[token] = buf.raw[:n]
        return cached

    def stop_token_ids(self, stop: Sequence[str]) -> frozenset[int]:
        """Token ids of the stop strings that are one special token (``<|im_end|>``, …)."""
        ids = set()
        for text in stop:
            found = self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
            if len(found) == 1 and self._piece(found[0]) == b"":
                ids.add(found[0])
        return frozenset(ids)

    def chat_info(self) -> Any:
        """What the file says about chatting with it (name, template, BOS/EOS text)."""
        from baize_tui.chat_format import ModelChatInfo

        meta = self._llm.metadata or {}

        def token_text(key: str) -> str:
            try:
                index = int(meta.get(key, -1))
            except ValueError:
                return ""
            if index < 0:
                return ""
            import llama_cpp

            raw = llama_cpp.llama_vocab_get_text(self._vocab, index)
            return raw.decode("utf-8", errors="replace") if raw else ""

        return ModelChatInfo(
            name=str(self.info.get("name") or self.path.stem),
            chat_template=meta.get("tokenizer.chat_template") or None,
            bos_token=token_text("tokenizer.ggml.bos_token_id"),
            eos_token=token_text("tokenizer.ggml.eos_token_id"),
        )

    def close(self) -> None:
        """Free the model, safely while a generation runs on another thread.

        Generations are told to stop at their next step (a prompt batch or a token), then this
        waits for the step in progress to return (it holds ``_native``) before freeing: the
        context is never freed under llama_decode. A generation resumed afterwards ends as
        cancelled without touching the model.
        """
        closing = getattr(self, "_closing", None)
        native = getattr(self, "_native", None)
        if closing is None or native is None:  # __init__ failed before they existed
            return
        closing.set()
        if not native.acquire(timeout=CLOSE_WAIT_S):
            log.info("waiting for llama.cpp to finish its current step before closing")
            native.acquire()
        try:
            llm, self._llm = getattr(self, "_llm", None), None
            if llm is not None:
                llm.close()
        finally:
            native.release()
