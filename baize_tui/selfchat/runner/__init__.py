"""The async self-chat runner: seeds in, dialogues appended to the run directory as they finish.

One ``AsyncOpenAI`` client (its own retries off: this module retries, counts and logs) drives
``concurrency`` workers, each generating one dialogue at a time, so at most ``concurrency``
requests are in flight. Optional RPM/TPM token buckets pace requests. Failures are classified:

- 429 (except ``insufficient_quota``), 408, 409, >= 500, timeouts, dropped connections and
  malformed bodies are retried with exponential backoff and jitter; a 429's ``retry-after-ms`` /
  ``Retry-After`` is honoured and pauses **every** worker;
- 400 / 422 (and other 4xx) fail that dialogue once, recorded in ``failed.jsonl``, not retried;
- 401 / 403 / 404 and ``insufficient_quota`` stop the run with one message naming the setting.

Budgets (``max_tokens_total``, ``max_cost``) count what previous sessions of the run spent plus
what in-flight dialogues are expected to spend; when reached, no new dialogue starts, in-flight
ones finish and are saved. ``stop()`` does the same on request (Ctrl+C, the TUI's Stop button).

:mod:`.config` holds the settings and statistics, :mod:`.client` the error classification and
rate limiting, :mod:`.loop` the runner itself. Every public name is importable from
``baize_tui.selfchat.runner``.
"""

from __future__ import annotations

from baize_tui.selfchat.runner.client import (
    CallResult,
    DialogueFailed,
    FatalRunError,
    RateLimiter,
    estimate_tokens,
    parse_duration,
    parse_retry_after,
)
from baize_tui.selfchat.runner.config import (
    DEFAULT_BASE_URL,
    DEFAULT_PRICES,
    Event,
    RunConfig,
    RunStats,
    emit_event,
    redact_url,
    resolve_price,
)
from baize_tui.selfchat.runner.loop import (
    SelfChatRunner,
)

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_PRICES",
    "RunConfig",
    "redact_url",
    "resolve_price",
    "RunStats",
    "Event",
    "emit_event",
    "FatalRunError",
    "DialogueFailed",
    "CallResult",
    "estimate_tokens",
    "parse_retry_after",
    "parse_duration",
    "RateLimiter",
    "SelfChatRunner",
]
