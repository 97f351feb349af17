"""What every engine provides: sampling parameters, per-turn stats, and the streaming protocol.

An engine turns a prompt (a Baize prompt string, or chat messages for chat APIs) into a
stream of text pieces. :meth:`Engine.stream` returns a :class:`Generation`: iterate it for
the pieces; its :attr:`Generation.stats` fill in as it runs (time to first token, token
counts, tokens/s, finish reason). Setting the ``cancel`` event stops generation between
tokens; closing the generation (``gen.close()``) stops it too.

Nothing here imports llama_cpp, openai, torch or transformers.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length", "cancelled", "error"]
FINISH_REASONS: tuple[str, ...] = ("stop", "length", "cancelled", "error")

Messages = list[dict[str, str]]
PromptOrMessages = str | Messages


@dataclass(frozen=True)
class SamplingParams:
    """How to sample a reply. The defaults are Baize's (BAIZE.md §1).

    The original demo sampled with temperature and top-p only, so top-k and min-p are off
    (0) and there is no repeat penalty (1.0). ``seed=None`` draws a fresh seed each turn
    (the seed used is reported in :attr:`TurnStats.seed`); a fixed seed repeats a reply.
    ``temperature=0`` is greedy decoding.
    """

    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    max_new_tokens: int = 512
    seed: int | None = None

    def __post_init__(self) -> None:
        from baize_tui.errors import UserError

        checks = (
            (0 <= self.temperature < math.inf, "temperature must be a finite number >= 0"),
            (0 <= self.top_p <= 1, "top_p must be between 0 and 1"),
            (self.top_k >= 0, "top_k must be >= 0 (0 turns it off)"),
            (0 <= self.min_p <= 1, "min_p must be between 0 and 1"),
            (0 < self.repeat_penalty < math.inf,
             "repeat_penalty must be a finite number > 0 (1.0 turns it off)"),
            (self.max_new_tokens >= 1, "max_new_tokens must be >= 1"),
            (self.seed is None or self.seed >= 0, "seed must be >= 0"),
        )
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, for history and config."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> SamplingParams:
        """Back from :meth:`to_dict`; unknown keys are ignored, missing ones take defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})

    def with_(self, **changes: Any) -> SamplingParams:
        """A copy with some values changed (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass
class TurnStats:
    """What one generation cost. Filled in while it streams; final once it ends.

    ``evaluated_tokens`` is the engine's own count of tokens it ran through the model for
    this turn (prompt tokens not served from its cache, plus sampled tokens fed back); it
    is ``None`` for engines that cannot tell (remote APIs).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    total_s: float | None = None
    finish_reason: FinishReason | None = None
    evaluated_tokens: int | None = None
    seed: int | None = None
    error: str | None = None
    #: prompt tokens served from the engine's KV cache (``None``: the engine cannot tell)
    reused_tokens: int | None = None
    #: set when the prompt did not extend the previous one (the cache could not be reused)
    kv_note: str | None = None

    @classmethod
    def seeded(cls, params: SamplingParams) -> TurnStats:
        """Stats for a local engine's turn: the params' seed, or a fresh random one.

        llama-cpp-python (and a fixed transformers seed) would otherwise repeat one reply
        for every unseeded turn; the seed used is reported so a reply can be reproduced.
        """
        import random

        return cls(seed=params.seed if params.seed is not None else random.randrange(2**31))

    def summary(self) -> str:
        """One line for humans: ``12 tokens, 0.05 s to first token, 85.0 tokens/s (stop)``."""
        parts = [f"{self.prompt_tokens} prompt + {self.completion_tokens} reply tokens"]
        if self.ttft_s is not None:
            parts.append(f"{self.ttft_s:.2f} s to first token")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:.1f} tokens/s")
        if self.evaluated_tokens is not None:
            parts.append(f"{self.evaluated_tokens} evaluated")
        return ", ".join(parts) + f" ({self.finish_reason or 'running'})"


class Generation(Iterator[str]):
    """One streaming generation: an iterator of text pieces plus its :class:`TurnStats`.

    The engine supplies ``pieces``, a generator that sets the token counts and the finish
    reason on ``stats``; this wrapper measures time to first token and tokens/s around it,
    and turns an exception into ``finish_reason="error"`` (the exception still propagates).
    """

    def __init__(self, pieces: Iterator[str], stats: TurnStats) -> None:
        self.stats = stats
        self._pieces = pieces
        self._start = time.perf_counter()
        self._first: float | None = None
        self._first_tokens = 0  # tokens sampled when the first text came
        self._last: float | None = None
        self._done = False

    def __iter__(self) -> Generation:
        return self

    def __next__(self) -> str:
        if self._done:
            raise StopIteration
        try:
            piece = next(self._pieces)
        except StopIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._finish(exc)
            raise
        now = time.perf_counter()
        if piece and self._first is None:
            self._first = now
            self._first_tokens = max(1, self.stats.completion_tokens)
            self.stats.ttft_s = now - self._start
        self._last = now
        return piece

    def close(self) -> None:
        """Stop generating now (from the iterating thread; other threads set ``cancel``)."""
        if self._done:
            return
        close = getattr(self._pieces, "close", None)
        try:
            if close is not None:
                close()
        finally:
            if self.stats.finish_reason is None:
                self.stats.finish_reason = "cancelled"
            self._finish()

    def _finish(self, exc: BaseException | None = None) -> None:
        if self._done:
            return
        self._done = True
        end = time.perf_counter()
        self.stats.total_s = end - self._start
        if exc is not None:
            if isinstance(exc, (KeyboardInterrupt, GeneratorExit)):
                self.stats.finish_reason = "cancelled"
            else:
                self.stats.finish_reason = "error"
                self.stats.error = str(exc) or type(exc).__name__
        elif self.stats.finish_reason is None:
            self.stats.finish_reason = "stop"
        n = self.stats.completion_tokens
        if self._first is not None and self._last is not None and n > self._first_tokens:
            # Tokens sampled after the first text, over the time since. Some tokens show no
            # text (held back, part of a character, cut by a stop): a stopped reply is
            # measured to the stop, not to the last piece shown, and tokens sampled before
            # the first text do not count against the time after it.
            last = end if self.stats.finish_reason == "cancelled" else self._last
            span = last - self._first
            if span > 0:
                self.stats.tokens_per_s = (n - self._first_tokens) / span

    def __enter__(self) -> Generation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@runtime_checkable
class Engine(Protocol):
    """A text generator behind one interface (llama.cpp, an OpenAI-compatible API, HF)."""

    #: the spec it was opened from (``PATH.gguf``, ``openai:MODEL``, ``hf:BASE+LORA``)
    spec: str
    #: True when :meth:`stream` takes chat messages rather than a prompt string
    takes_messages: bool

    @property
    def n_ctx(self) -> int:
        """Context size in tokens; 0 when unknown (then nothing is fitted)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens in a whole prompt as the engine would see it (including BOS)."""
        ...

    def stream(
        self,
        prompt: PromptOrMessages,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        *,
        stop: Sequence[str] = (),
    ) -> Generation:
        """Start generating; iterate the result for text pieces."""
        ...

    def describe(self) -> str:
        """One line naming the backend and model, for status bars and logs (no secrets)."""
        ...

    def close(self) -> None:
        """Free the model / connection."""
        ...


class PromptEngine:
    """The ``stream`` shared by local engines that take a rendered prompt string and draw a
    seed per turn (llama.cpp, transformers); subclasses write ``_pieces``."""

    engine_label = "this"

    def stream(
        self,
        prompt: PromptOrMessages,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        *,
        stop: Sequence[str] = (),
    ) -> Generation:
        """Start generating; see :class:`Engine`."""
        if not isinstance(prompt, str):
            raise TypeError(f"the {self.engine_label} engine takes a rendered prompt string")
        stats = TurnStats.seeded(params)
        return Generation(self._pieces(prompt, params, cancel or threading.Event(), stop, stats),
                          stats)

    def _pieces(self, prompt: str, params: SamplingParams, cancel: threading.Event,
                stop: Sequence[str], stats: TurnStats) -> Iterator[str]:
        raise NotImplementedError

