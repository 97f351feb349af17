"""The OpenAI-compatible endpoints the app knows, as model specs (``openai:MODEL``) for the
model picker.

Two sources besides the models past chats used (:mod:`baize_tui.known_models`):

* ``[openai] models`` in ``config.toml``: a list of model names on the configured endpoint;
* the configured endpoint itself (``[openai] base_url``, or ``OPENAI_BASE_URL``): its
  ``GET /models`` lists what it serves (llama.cpp's server, vLLM, Ollama and OpenAI all
  answer it). Asked with a short timeout, off the UI thread; a failure lists nothing.

The API key (``OPENAI_API_KEY`` or ``[openai] api_key``) is sent as a bearer token and never
logged. No Textual here.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from typing import Any

log = logging.getLogger("baize_tui.endpoints")

#: Seconds the picker waits for an endpoint's model list.
LIST_TIMEOUT_S = 3.0
#: At most this many models are taken from one endpoint's list.
MAX_LISTED = 200


def _section(config: dict[str, Any]) -> dict[str, Any]:
    section = config.get("openai")
    return section if isinstance(section, dict) else {}


def configured_specs(config: dict[str, Any]) -> list[str]:
    """``openai:NAME`` for every name in ``[openai] models`` (each once, in order)."""
    names = _section(config).get("models") or []
    out: list[str] = []
    for name in names if isinstance(names, list) else []:
        spec = f"openai:{str(name).strip()}"
        if str(name).strip() and spec not in out:
            out.append(spec)
    return out


def endpoint_url(config: dict[str, Any]) -> str:
    """The configured endpoint's base URL (``OPENAI_BASE_URL`` wins), or ``""``."""
    return (
        os.environ.get("OPENAI_BASE_URL") or str(_section(config).get("base_url") or "")
    ).rstrip("/")


def listed_specs(config: dict[str, Any], timeout: float = LIST_TIMEOUT_S) -> list[str]:
    """``openai:ID`` for every model the configured endpoint lists at ``GET /models``
    (nothing when no endpoint is configured, or it does not answer in ``timeout`` s)."""
    base = endpoint_url(config)
    if not base.startswith(("http://", "https://")):
        return []
    key = os.environ.get("OPENAI_API_KEY") or str(_section(config).get("api_key") or "")
    request = urllib.request.Request(f"{base}/models", headers={"Accept": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = json.loads(response.read(4_000_000))
    except (OSError, ValueError, urllib.error.URLError) as exc:
        from baize_tui.redact import redact_url

        log.info("could not list the models of %s: %s", redact_url(base), type(exc).__name__)
        return []
    items = body.get("data") if isinstance(body, dict) else None
    out: list[str] = []
    for item in items if isinstance(items, list) else []:
        name = item.get("id") if isinstance(item, dict) else None
        if isinstance(name, str) and name.strip() and f"openai:{name}" not in out:
            out.append(f"openai:{name.strip()}")
        if len(out) >= MAX_LISTED:
            break
    return out
