"""``openai:MODEL``: any OpenAI-compatible chat endpoint (OpenAI, llama.cpp's server, vLLM …).

Messages go out as chat roles: the Baize system prompt as the ``system`` message, past turns
as ``user``/``assistant``. The key comes from ``OPENAI_API_KEY`` or the config's
``[openai] api_key``; it is handed to the client and never logged or shown (``describe()``
and error messages leave it out).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from baize_tui.engines.base import Generation, PromptOrMessages, SamplingParams, TurnStats
from baize_tui.errors import OperationFailed, UserError

log = logging.getLogger("baize_tui.openai")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "sk-no-key-required"  # what local servers get when no key is configured
MAX_STOP = 4  # the OpenAI API accepts at most four stop sequences


class OpenAIEngine:
    """Streams chat completions from an OpenAI-compatible HTTP API."""

    takes_messages = True

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        n_ctx: int = 0,
        timeout: float = 120.0,
        max_retries: int = 2,
    ) -> None:
        if not model:
            raise UserError("openai:MODEL needs a model name, e.g. openai:gpt-4o-mini")
        self.model = model
        self.spec = f"openai:{model}"
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/") or None
        key = api_key or os.environ.get("OPENAI_API_KEY") or ""
        if not key:
            if self.base_url is None:
                raise UserError(
                    "no OpenAI API key: set OPENAI_API_KEY, or api_key under [openai] in the "
                    "config file (see `baize-tui paths config`); for a local server pass "
                    "--base-url"
                )
            key = NO_KEY
        self._n_ctx = n_ctx
        from baize_tui.redact import register_secret

        if key != NO_KEY:  # a server echoing the key never gets it into logs or history
            register_secret(key)
        import openai

        self._client = openai.OpenAI(
            api_key=key, base_url=self.base_url, timeout=timeout, max_retries=max_retries
        )

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    def count_tokens(self, text: str) -> int:
        """An estimate (about four characters a token): remote tokenizers are unknown."""
        return max(1, (len(text.encode("utf-8")) + 3) // 4)

    def describe(self) -> str:
        return f"OpenAI API · {self.model} at {self.base_url or DEFAULT_BASE_URL}"

    def stream(
        self,
        prompt: PromptOrMessages,
        params: SamplingParams,
        cancel: threading.Event | None = None,
        *,
        stop: Sequence[str] = (),
    ) -> Generation:
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        stats = TurnStats(seed=params.seed)
        return Generation(
            self._pieces(prompt, params, cancel or threading.Event(), stop, stats), stats
        )

    def request_body(
        self, messages: list[dict[str, str]], params: SamplingParams, stop: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The arguments of ``chat.completions.create`` (for ``--show-prompt`` and tests)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if stop:
            body["stop"] = list(stop)[:MAX_STOP]
        # Not in OpenAI's API, but understood by llama.cpp's server, vLLM and others; sent
        # only when switched on, so OpenAI itself never sees an unknown parameter.
        extra: dict[str, float] = {}
        if params.top_k:
            extra["top_k"] = params.top_k
        if params.min_p:
            extra["min_p"] = params.min_p
        if params.repeat_penalty != 1.0:
            extra["repeat_penalty"] = params.repeat_penalty
        if extra:
            body["extra_body"] = extra
        return body

    def _pieces(
        self,
        messages: list[dict[str, str]],
        params: SamplingParams,
        cancel: threading.Event,
        stop: Sequence[str],
        stats: TurnStats,
    ) -> Iterator[str]:
        stats.prompt_tokens = self.count_tokens(json.dumps(messages, ensure_ascii=False))
        if cancel.is_set():
            stats.finish_reason = "cancelled"
            return
        body = self.request_body(messages, params, stop)
        text = ""
        reason = None
        usage = None
        try:
            response = self._client.chat.completions.create(
                **body, stream=True, stream_options={"include_usage": True}
            )
        except Exception as exc:
            raise self._error(exc) from None
        try:
            for chunk in _guard(self, response):
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices[:1]:
                    piece = choice.delta.content if choice.delta else None
                    if choice.finish_reason:
                        reason = choice.finish_reason
                    if piece:
                        text += piece
                        stats.completion_tokens = self.count_tokens(text)
                        yield piece
                if cancel.is_set():
                    break
        finally:
            response.close()
            if usage is not None:
                stats.prompt_tokens = usage.prompt_tokens or stats.prompt_tokens
                stats.completion_tokens = usage.completion_tokens or stats.completion_tokens
            if cancel.is_set():
                stats.finish_reason = "cancelled"
            elif reason == "length":
                stats.finish_reason = "length"
            elif reason is not None:
                stats.finish_reason = "stop"

    def _error(self, exc: BaseException) -> UserError:
        """One clear line for an API failure (never including the key)."""
        import openai

        where = self.base_url or DEFAULT_BASE_URL
        if isinstance(exc, openai.AuthenticationError):
            return UserError(
                f"{where} rejected the API key (HTTP 401); check OPENAI_API_KEY or [openai] "
                f"api_key in the config"
            )
        if isinstance(exc, openai.APITimeoutError):
            return OperationFailed(f"{where} did not answer in time; try again later")
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return OperationFailed(f"cannot reach {where} ({type(cause).__name__}: {cause}); "
                                   f"check --base-url and the network")
        if isinstance(exc, openai.NotFoundError):
            return UserError(f"{where}: model {self.model!r} not found (HTTP 404)")
        if isinstance(exc, openai.APIStatusError):
            return OperationFailed(
                f"{where} answered HTTP {exc.status_code}: {_message(exc)}"
            )
        if isinstance(exc, openai.OpenAIError):
            return OperationFailed(f"{where}: {type(exc).__name__}: {exc}")
        return OperationFailed(f"{where}: the reply stream broke off ({type(exc).__name__}: {exc})")

    def close(self) -> None:
        self._client.close()


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
    return str(getattr(exc, "message", exc))


def _guard(engine: OpenAIEngine, response: Any) -> Iterator[Any]:
    """Iterate the SSE stream, turning transport and API errors into one-line UserErrors."""
    iterator = iter(response)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            raise engine._error(exc) from None
        yield chunk
