"""A self-chat run's settings, prices and statistics, and the events a run reports.

:class:`RunConfig` is what a run is asked to do (endpoint, model, concurrency, budgets);
:class:`RunStats` counts what it did, including what earlier sessions of the same run spent;
:func:`resolve_price` finds the USD per 1M tokens of a model (config ``[selfchat.prices]``
adds and overrides :data:`DEFAULT_PRICES`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from baize_tui.selfchat import templates as tpl

DEFAULT_BASE_URL = "https://api.openai.com/v1"

# USD per 1M tokens (input, output); config ``[selfchat.prices]`` adds and overrides.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-3.5-turbo": (0.5, 1.5),
    "gpt-4o-mini": (0.15, 0.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4.1": (2.0, 8.0),
}


# ---------------------------------------------------------------------------------------
# configuration and statistics
# ---------------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """Everything that shapes a self-chat run (the API key is deliberately not here)."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    mode: str = "v1"
    max_turns: int = 3
    template: tpl.Template = tpl.DEFAULT_TEMPLATE
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_retries: int = 8
    timeout: float = 120.0
    max_tokens_total: int | None = None
    max_cost: float | None = None
    min_turns: int = 1
    fsync: bool = False
    retry_rejected: bool = False
    price: tuple[float, float] | None = None
    backoff_base: float = 0.5
    backoff_cap: float = 60.0

    def fingerprint(self) -> dict[str, Any]:
        """The settings that make two runs' dialogues comparable (checked on resume)."""
        return {
            "model": self.model,
            "mode": self.mode,
            "max_turns": self.max_turns if self.mode == "v2" else None,
            "template_sha256": hashlib.sha256(self.template.text.encode()).hexdigest()[:16],
            "template_source": self.template.source,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }

    def public(self) -> dict[str, Any]:
        """The config as saved in state.json (no secrets)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("template", "price")}
        out["base_url"] = redact_url(self.base_url)
        out["template_source"] = self.template.source
        out["price_per_1m"] = list(self.price) if self.price else None
        out["fingerprint"] = self.fingerprint()
        return out


def redact_url(url: str) -> str:
    """``url`` without user-info or query (where keys sometimes hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def resolve_price(model: str, table: dict[str, Any] | None = None) -> tuple[float, float] | None:
    """USD per 1M (input, output) tokens for ``model``, from config then built-ins."""
    merged: dict[str, Any] = dict(DEFAULT_PRICES)
    merged.update(table or {})
    value = merged.get(model)
    if value is None:
        return None
    if isinstance(value, dict):
        return float(value.get("input", 0.0)), float(value.get("output", 0.0))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return float(value[0]), float(value[1])
    if isinstance(value, (int, float)):
        return float(value), float(value)
    return None


@dataclass
class RunStats:
    """Live counters of a run (read by the CLI progress bar and the TUI)."""

    total: int = 0
    previously_done: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0
    in_flight: int = 0
    retries: int = 0
    rate_limited: int = 0
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = 0.0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    paused_until: float = 0.0
    last_error: str = ""
    stop_reason: str = ""
    reasons: Counter = field(default_factory=Counter)
    _finish_times: deque = field(default_factory=lambda: deque(maxlen=200))

    @property
    def tokens(self) -> int:
        """Input plus output tokens (all sessions of the run)."""
        return self.tokens_in + self.tokens_out

    @property
    def remaining(self) -> int:
        """Seeds not finished yet in this session's plan."""
        return max(0, self.total - self.previously_done - self.done - self.failed - self.rejected)

    def elapsed(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    def per_minute(self) -> float:
        """Accepted dialogues per minute over the recent window (whole run at first)."""
        times = self._finish_times
        now = self.finished or time.monotonic()
        if len(times) >= 10:
            span = now - times[0]
            return 60.0 * len(times) / span if span > 0 else 0.0
        span = now - self.started
        return 60.0 * self.done / span if span > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds left at the current rate, or ``None`` when unknown."""
        rate = self.per_minute()
        if rate <= 0:
            return None
        return self.remaining / rate * 60.0

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot."""
        return {
            "total": self.total, "previously_done": self.previously_done, "done": self.done,
            "failed": self.failed, "rejected": self.rejected, "in_flight": self.in_flight,
            "retries": self.retries, "rate_limited": self.rate_limited, "calls": self.calls,
            "tokens_in": self.tokens_in, "tokens_out": self.tokens_out, "cost": self.cost,
            "elapsed_s": round(self.elapsed(), 3), "per_minute": round(self.per_minute(), 2),
            "stop_reason": self.stop_reason, "reasons": dict(self.reasons),
        }


@dataclass
class Event:
    """Something the UI may show: ``kind`` is done, failed, retry, pause, notice, error, stop."""

    kind: str
    message: str = ""
    record: dict[str, Any] | None = None


class _EventLog(Protocol):
    def log_event(self, message: str) -> None: ...


def emit_event(store: _EventLog, on_event: Callable[[Event], None] | None, kind: str,
               message: str = "", record: dict[str, Any] | None = None, *,
               logged: Collection[str], prefix: str = "") -> None:
    """Tell ``on_event`` (the CLI or TUI) about ``kind``, and write it to the run's
    ``events.log`` (``"{prefix}{kind}: {message}"``) when ``kind`` is one of ``logged``; the
    message is redacted first (registered API keys, URL credentials). A log that cannot be
    written does not stop the run."""
    from baize_tui.redact import redact_text

    message = redact_text(message)
    if kind in logged:
        try:
            store.log_event(f"{prefix}{kind}: {message}")
        except OSError:
            pass
    if on_event is not None:
        on_event(Event(kind, message, record))

