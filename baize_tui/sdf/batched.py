"""N candidates of one prompt decoded together, the way a llama.cpp server's parallel slots do.

The prompt is evaluated once as sequence 0, its KV cells are shared with sequences 1..N-1
(``llama_memory_seq_cp`` on a unified KV cache), then every step decodes one token of each
unfinished sequence in a single ``llama_batch``, so the weights are read once per step for all
N candidates instead of N times. Each sequence has its own sampler chain (top-p, temperature,
a seeded draw), so candidates are independent and reproducible from their seeds.

This talks to llama.cpp's public C API through llama-cpp-python's ctypes bindings (not the
``Llama`` class's internals). Stop strings are Baize's; a sequence also ends at an
end-of-generation token or ``max_tokens``.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from baize_tui.errors import OperationFailed
from baize_tui.prompt import STOP_STRINGS, cut_reply


def supported() -> bool:
    """Whether the installed llama-cpp-python has the C API this module needs (the memory API
    and unified KV caches, llama.cpp from mid-2025); otherwise sampling goes one by one."""
    try:
        import llama_cpp as lc
    except ImportError:
        return False
    fields = {name for name, *_ in getattr(lc.llama_context_params, "_fields_", [])}
    needed = ("llama_memory_seq_cp", "llama_get_memory", "llama_memory_clear", "llama_batch_init",
              "llama_sampler_chain_init", "llama_sampler_init_dist", "llama_init_from_model")
    return {"kv_unified", "n_seq_max"} <= fields and all(hasattr(lc, n) for n in needed)


@dataclass
class Candidate:
    """One decoded candidate."""

    text: str
    finish_reason: str
    completion_tokens: int


class BatchedGguf:
    """A GGUF loaded for batched multi-sequence sampling (``n_seq`` sequences at most)."""

    takes_messages = False

    def __init__(self, path: str | Path, *, n_seq: int, max_tokens: int,
                 n_threads: int | None = None, max_prompt: int = 1024) -> None:
        import llama_cpp as lc

        from baize_tui.engines.llama import physical_cores, route_llama_logs

        route_llama_logs()
        self.path = Path(path).expanduser().absolute()
        self.spec = str(self.path)
        self.n_seq = max(1, n_seq)
        self._lc = lc
        self._lock = threading.Lock()
        mparams = lc.llama_model_default_params()
        mparams.use_mmap = True
        model = lc.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise OperationFailed(f"{self.path}: llama.cpp could not load this model; the file "
                                  "may be damaged or from a newer llama.cpp")
        self._model = model
        self.n_ctx_train = int(lc.llama_model_n_ctx_train(model))
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = min(self.n_ctx_train, max_prompt + max_tokens) + self.n_seq * max_tokens
        cparams.n_batch = max(512, max_prompt)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_seq_max = self.n_seq
        cparams.kv_unified = True
        threads = n_threads or physical_cores()
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            lc.llama_model_free(model)
            raise OperationFailed(f"{self.path}: llama.cpp could not create a context for "
                                  f"{self.n_seq} sequences")
        self._ctx = ctx
        self._vocab = lc.llama_model_get_vocab(model)
        self.n_ctx = int(cparams.n_ctx)
        self._n_batch = int(cparams.n_batch)

    def describe(self) -> str:
        """One line for logs."""
        return f"llama.cpp batched · {self.path.name} ({self.n_seq} sequences)"

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a whole prompt, BOS first when the vocabulary asks for it."""
        lc = self._lc
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, True, True)
        if n < 0:
            cap = -n
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, True, True)
        return list(buf[:n])

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lc.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def _sampler(self, seed: int, temperature: float, top_p: float) -> ctypes.c_void_p:
        lc = self._lc
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if temperature <= 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
            return chain
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(seed))
        return chain

    def sample_many(self, prompt: str, seeds: Sequence[int], *, temperature: float,
                    top_p: float, max_tokens: int, cancel: threading.Event | None = None,
                    stop: Sequence[str] = STOP_STRINGS) -> tuple[int, list[Candidate]]:
        """``len(seeds)`` candidates for ``prompt``; returns (prompt tokens, candidates)."""
        if len(seeds) > self.n_seq:
            raise ValueError(f"at most {self.n_seq} sequences, got {len(seeds)}")
        tokens = self.tokenize(prompt)
        if len(tokens) >= min(self.n_ctx_train, self._n_batch):
            from baize_tui.prompt import ContextOverflow

            raise ContextOverflow(len(tokens) + max_tokens, min(self.n_ctx_train, self._n_batch),
                                  prompt_tokens=len(tokens), reserved=max_tokens)
        budget = min(max_tokens, self.n_ctx_train - len(tokens))
        with self._lock:
            return len(tokens), self._run(tokens, seeds, temperature, top_p, budget,
                                          cancel or threading.Event(), stop)

    def _decode(self, batch: object, entries: list[tuple[int, int, int, bool]]) -> None:
        """Fill ``batch`` with (token, pos, seq, wants_logits) entries and decode it."""
        b = batch  # llama_batch
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i] = tok  # type: ignore[attr-defined]
            b.pos[i] = pos  # type: ignore[attr-defined]
            b.n_seq_id[i] = 1  # type: ignore[attr-defined]
            b.seq_id[i][0] = seq  # type: ignore[attr-defined]
            b.logits[i] = 1 if logits else 0  # type: ignore[attr-defined]
        b.n_tokens = len(entries)  # type: ignore[attr-defined]
        rc = self._lc.llama_decode(self._ctx, batch)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _run(self, tokens: list[int], seeds: Sequence[int], temperature: float, top_p: float,
             budget: int, cancel: threading.Event, stop: Sequence[str]) -> list[Candidate]:
        lc = self._lc
        n = len(seeds)
        mem = lc.llama_get_memory(self._ctx)
        lc.llama_memory_clear(mem, True)
        batch = lc.llama_batch_init(max(len(tokens), n), 0, 1)
        samplers = [self._sampler(s, temperature, top_p) for s in seeds]
        out = [bytearray() for _ in range(n)]
        counts = [0] * n
        reasons: list[str | None] = [None] * n
        try:
            last = len(tokens) - 1
            self._decode(batch, [(t, i, 0, i == last) for i, t in enumerate(tokens)])
            for s in range(1, n):
                lc.llama_memory_seq_cp(mem, 0, s, -1, -1)
            idx = [last] * n  # batch row holding each sequence's latest logits
            pos = len(tokens)
            while not cancel.is_set():
                step: list[tuple[int, int, int, bool]] = []
                for s in range(n):
                    if reasons[s] is not None:
                        continue
                    tok = lc.llama_sampler_sample(samplers[s], self._ctx, idx[s])
                    if lc.llama_vocab_is_eog(self._vocab, tok):
                        reasons[s] = "stop"
                        continue
                    out[s] += self._piece(tok)
                    counts[s] += 1
                    text = out[s].decode("utf-8", errors="ignore")
                    if any(x in text for x in stop):
                        reasons[s] = "stop"
                    elif counts[s] >= budget:
                        reasons[s] = "length"
                    else:
                        idx[s] = len(step)
                        step.append((tok, pos, s, True))
                if not step:
                    break
                self._decode(batch, step)
                pos += 1
        finally:
            lc.llama_batch_free(batch)
            for smpl in samplers:
                lc.llama_sampler_free(smpl)
            lc.llama_memory_clear(mem, True)
        return [Candidate(cut_reply(out[s].decode("utf-8", errors="replace"), stop),
                          reasons[s] or "cancelled", counts[s]) for s in range(n)]

    def close(self) -> None:
        """Free the context and the model."""
        ctx, self._ctx = getattr(self, "_ctx", None), None
        if ctx:
            self._lc.llama_free(ctx)
        model, self._model = getattr(self, "_model", None), None
        if model:
            self._lc.llama_model_free(model)
