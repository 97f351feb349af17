"""Keep secrets out of logs, messages and files: one redactor for URLs and known keys.

* :func:`redact_url` hides the credentials of one URL (``user:KEY@`` and query parameters
  such as ``api-key=``, ``key=``, ``token=``, ``sig=``).
* :func:`redact_text` does that for every URL inside a text and replaces every registered
  secret (:func:`register_secret`: the API key a command uses, whatever its source).
* :class:`RedactingFilter` applies :func:`redact_text` to every log record that reaches a
  handler, third-party ones (httpx's ``HTTP Request: POST http://user:KEY@…``) included.
* :func:`scrub` walks JSON-like data (what a run writes) and redacts every string in it.
* :func:`scrub_secrets` replaces only the registered secrets (what the history store applies
  to every text it writes: stored chat text is otherwise kept exactly as typed), and
  :class:`SecretStream` does that to text printed piece by piece, holding back a piece's end
  while it could still be the start of a secret.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
SECRET_PARAMS = re.compile(
    r"(?i)^(api[-_]?key|key|token|access[-_]?token|auth|authorization|secret|password|"
    r"passwd|pwd|sig|signature|client[-_]?secret|x-api-key)$"
)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]+")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
_lock = threading.Lock()
_secrets: set[str] = set()
MIN_SECRET_CHARS = 6  # shorter "secrets" would mask ordinary words


def register_secret(value: str | None) -> None:
    """Remember a secret (an API key) so :func:`redact_text` replaces it wherever it appears."""
    if value and len(value) >= MIN_SECRET_CHARS:
        with _lock:
            _secrets.add(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests)."""
    with _lock:
        _secrets.clear()


def redact_url(url: str) -> str:
    """``url`` with its user info and secret-looking query values replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_redact_param(piece) for piece in parts.query.split("&"))
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redact_param(piece: str) -> str:
    key, sep, _ = piece.partition("=")
    return f"{key}={MASK}" if sep and SECRET_PARAMS.match(key) else piece


def redact_text(text: str) -> str:
    """``text`` with every URL's credentials, bearer tokens and registered secret hidden."""
    if not text:
        return text
    if "://" in text:
        text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _registered() -> list[str]:
    with _lock:
        return sorted(_secrets, key=len, reverse=True)


def _secret_prefix_at_end(text: str, secrets: list[str]) -> int:
    """Length of the longest end of ``text`` that starts some secret (but is not all of it)."""
    longest = 0
    for secret in secrets:
        for size in range(min(len(secret) - 1, len(text)), longest, -1):
            if text.endswith(secret[:size]):
                longest = size
                break
    return longest


def scrub_secrets(text: str, *, partial: bool = False) -> str:
    """``text`` with every registered secret replaced by ``***``.

    ``partial``: the text is a reply still streaming, so an end that is the first
    :data:`MIN_SECRET_CHARS` or more characters of a secret is masked too (the rest of the
    key has not arrived yet, and a kill now must not leave its first half on disk).
    """
    if not text:
        return text
    secrets = _registered()
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if partial and secrets:
        cut = _secret_prefix_at_end(text, secrets)
        if cut >= MIN_SECRET_CHARS:
            text = text[:-cut] + MASK
    return text


class SecretStream:
    """Scrubs registered secrets from text written piece by piece (a streamed reply).

    :meth:`feed` returns what is safe to show now; an end that could still grow into a
    secret waits for the next piece, and :meth:`flush` returns what is left at the end.
    """

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, piece: str) -> str:
        """The scrubbed text that can be shown now, given one more ``piece``."""
        secrets = _registered()
        if not secrets:
            text, self._pending = self._pending + piece, ""
            return text
        text = scrub_secrets(self._pending + piece)
        hold = _secret_prefix_at_end(text, secrets)
        self._pending = text[len(text) - hold:] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        """Whatever was held back (a secret's start that never completed is shown as is)."""
        text, self._pending = self._pending, ""
        return text


def scrub(value: Any) -> Any:
    """A copy of JSON-like ``value`` with :func:`redact_text` applied to every string."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites each record's message with :func:`redact_text` before a handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: A003 - logging's name
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: leave it to logging's own handling
            return True
        cleaned = redact_text(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class QuietFileHandler(logging.FileHandler):
    """A log file that never breaks a command: a failed write (disk full, read-only home)
    turns the handler off instead of printing logging's traceback; secrets are redacted."""

    def __init__(self, filename: str, **kwargs: Any) -> None:
        super().__init__(filename, **kwargs)
        self.addFilter(RedactingFilter())
        self.failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.failed:
            return
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed = True
