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
from baize_tui.engines.llama_compat import count_evaluated, library_prints_to_log, route_llama_logs
from baize_tui.errors import OperationFailed, UserError
from baize_tui.procs import physical_cores

__all__ = ["LlamaEngine", "inspect_gguf", "physical_cores", "route_llama_logs"]

log = logging.getLogger("baize_tui.llama_cpp")

SUPPORTED_ARCHITECTURES = ("llama",)
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
        from baize_tui.model_checks import check_context_fits, load_failure

        check_context_fits(self.path, self._n_ctx, self.info)
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
            with library_prints_to_log():
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
            raise OperationFailed(load_failure(self.path, exc, self._n_ctx, trained)) from exc
        llm.verbose = False  # no per-call prints or timing resets from here on
        self._llm: Any = llm
        count_evaluated(llm, self)
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
            chunks: Any = self._llm.create_completion(  # stream=True: a generator of chunks
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
