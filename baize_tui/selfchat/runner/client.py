"""The rate-limited side of a self-chat run: how a failed call is classified, how long to wait,
and the token buckets that pace requests.

Errors: :class:`FatalRunError` stops the run, :class:`DialogueFailed` fails one dialogue,
``_Retry`` retries a call after a wait (``retry-after-ms`` / ``Retry-After`` honoured;
``global_pause`` pauses every worker). :class:`RateLimiter` holds optional RPM/TPM buckets.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
import time
from dataclasses import dataclass
from typing import Any


# ---------------------------------------------------------------------------------------
# errors and helpers
# ---------------------------------------------------------------------------------------
class FatalRunError(Exception):
    """Stops the whole run (bad key, wrong model or URL, no quota)."""


class DialogueFailed(Exception):
    """One dialogue could not be generated."""

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class _Retry(Exception):
    def __init__(self, message: str, wait: float | None = None, *, global_pause: bool = False) -> None:
        super().__init__(message)
        self.wait = wait
        self.global_pause = global_pause


@dataclass
class CallResult:
    """One completion: text, finish reason and the call's own usage."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


def estimate_tokens(text: str) -> int:
    """A cheap token estimate (4 characters per token)."""
    return len(text) // 4 + 1


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            ms = float(value)
            if math.isfinite(ms) and ms >= 0:
                return ms / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(text: str | None) -> float | None:
    """OpenAI's reset durations (``"1s"``, ``"6m0s"``, ``"20ms"``) in seconds."""
    if not text:
        return None
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = _DURATION.findall(text)
    if not parts:
        return None
    return sum(float(n) * scale[u] for n, u in parts)


class RateLimiter:
    """Token buckets for requests and tokens per minute (either may be ``None``)."""

    def __init__(self, rpm: float | None, tpm: float | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        # buckets hold one second's worth: bursts stay small, pacing stays smooth
        self._req_cap = max(1.0, rpm / 60.0) if rpm else 0.0
        self._tok_cap = max(1.0, tpm / 60.0) if tpm else 0.0
        self._req = self._req_cap
        self._tok = self._tok_cap
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return bool(self.rpm or self.tpm)

    def _refill(self) -> None:
        now = time.monotonic()
        dt = now - self._last
        self._last = now
        if self.rpm:
            self._req = min(self._req_cap, self._req + dt * self.rpm / 60.0)
        if self.tpm:
            self._tok = min(self._tok_cap, self._tok + dt * self.tpm / 60.0)

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of about ``tokens`` tokens fits, then take it."""
        if not self.active:
            return
        async with self._lock:
            while True:
                self._refill()
                need_tok = min(float(tokens), self._tok_cap)
                waits = []
                if self.rpm and self._req < 1.0:
                    waits.append((1.0 - self._req) * 60.0 / self.rpm)
                if self.tpm and self._tok < need_tok:
                    waits.append((need_tok - self._tok) * 60.0 / self.tpm)
                if not waits:
                    if self.rpm:
                        self._req -= 1.0
                    if self.tpm:
                        self._tok -= tokens
                    return
                await asyncio.sleep(max(waits))

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once the real usage is known."""
        if self.tpm:
            self._tok += estimated - actual



def _response_class() -> type:
    """The HTTP response class of the installed SDK (httpx2 from openai 3, httpx before)."""
    try:
        import httpx2

        return httpx2.Response
    except ImportError:  # pragma: no cover - openai < 3
        import httpx

        return httpx.Response


def _short(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(str(msg).split())[:300]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
