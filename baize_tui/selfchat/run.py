"""Headless entry points shared by ``baize-tui selfchat`` and the TUI screen.

``resolve_api_key`` / ``resolve_base_url`` read the environment and config, ``open_run`` prepares
a run directory for a new run or a resume (checking that the settings match), ``run_selfchat``
runs it to the end, and ``summarize`` reports on a run directory.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from baize_tui.errors import UserError
from baize_tui.selfchat.batch_ops import batch_summary
from baize_tui.selfchat.runner import (
    DEFAULT_BASE_URL,
    Event,
    RunConfig,
    RunStats,
    SelfChatRunner,
    redact_url,
    resolve_price,
)
from baize_tui.selfchat.seeds import Seed
from baize_tui.selfchat.store import RunStore

NO_KEY = "sk-no-key-needed"
STATE_VERSION = 1


def resolve_base_url(cli_value: str | None, config: dict[str, Any]) -> str:
    """``--base-url``, then config ``[openai] base_url``, then ``OPENAI_BASE_URL``, then OpenAI."""
    url = cli_value or (config.get("openai") or {}).get("base_url") or os.environ.get("OPENAI_BASE_URL")
    url = (url or DEFAULT_BASE_URL).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--base-url {redact_url(url)!r}: expected http(s)://HOST[:PORT]/v1")
    return url


def resolve_api_key(base_url: str, config: dict[str, Any]) -> str:
    """``OPENAI_API_KEY``, then config ``[openai] api_key``; a placeholder for local servers."""
    key = os.environ.get("OPENAI_API_KEY") or (config.get("openai") or {}).get("api_key") or ""
    if key:
        return key
    if urlsplit(base_url).hostname == urlsplit(DEFAULT_BASE_URL).hostname:
        raise UserError("no API key: set OPENAI_API_KEY (or [openai] api_key in the config, "
                        "see `baize-tui paths config`), or use --base-url for a local server")
    return NO_KEY


def price_for(model: str, config: dict[str, Any]) -> tuple[float, float] | None:
    """The model's price from config ``[selfchat.prices]`` or the built-in table."""
    table = (config.get("selfchat") or {}).get("prices") or {}
    return resolve_price(model, table if isinstance(table, dict) else {})


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """How ``new`` settings differ from the ``old`` ones a directory was made with
    (``"key old -> new, …"``), or ``""`` when no setting changed."""
    return ", ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k])

def refuse_other_settings(store: Any, old: dict[str, Any], new: dict[str, Any], *,
                          done: str, advice: str, where: Path | None = None) -> None:
    """Close ``store`` and raise one clear :class:`UserError` when the ``new`` settings differ
    from the ``old`` ones the directory was ``done`` with (``"sampled"``, ``"judged"``…)."""
    what = settings_changes(old, new)
    if what:
        store.close()
        raise UserError(f"{where or store.dir} was {done} with other settings ({what}); {advice}")


def next_state(state: dict[str, Any] | None, version: int, session: dict[str, Any],
               **fields: Any) -> dict[str, Any]:
    """The state file's next contents for a session starting now: ``version``, ``created`` (kept
    from ``state``), ``updated``, then ``fields``, then ``sessions`` with this one appended
    (``{"started": now, **session}``; the last 50 kept). Self-chat, ``sdf sample`` and
    ``sdf judge`` all write their state files in this shape."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sessions = list((state or {}).get("sessions", []))
    sessions.append({"started": now, **session})
    return {"version": version, "created": (state or {}).get("created", now), "updated": now,
            **fields, "sessions": sessions[-50:]}


class _Runner(Protocol):
    async def run(self) -> RunStats: ...


R = TypeVar("R", bound=_Runner)


def run_in_fresh_loop(make_runner: Callable[[], R],
                      on_start: Callable[[R], None] | None = None) -> RunStats:
    """Make a runner inside a fresh event loop, hand it to ``on_start`` (e.g. for signal
    handlers or a Stop button), and run it to the end."""

    async def main() -> RunStats:
        runner = make_runner()
        if on_start is not None:
            on_start(runner)
        return await runner.run()

    return asyncio.run(main())


def open_run(out: Path | str, config: RunConfig, seeds: list[Seed], *,
             seeds_info: dict[str, Any] | None = None, force: bool = False) -> RunStore:
    """Open (or create) the run directory and save ``state.json``.

    A directory started with different generation settings (model, mode, template, sampling)
    is refused unless ``force``, so one raw.jsonl never mixes incomparable dialogues.
    """
    store = RunStore(out, fsync=config.fsync)
    state = store.read_state()
    if state is not None and not force:
        refuse_other_settings(store, (state.get("config") or {}).get("fingerprint") or {},
                              config.fingerprint(), done="started",
                              advice="use a new --out, or --force to continue anyway")
    store.write_state(next_state(state, STATE_VERSION, {"seeds": len(seeds)},
                                 config=config.public(),
                                 seeds=dict(seeds_info or {}, count=len(seeds))))
    return store


def run_selfchat(config: RunConfig, seeds: list[Seed], store: RunStore, *, api_key: str,
                 on_event: Callable[[Event], None] | None = None,
                 on_start: Callable[[SelfChatRunner], None] | None = None) -> RunStats:
    """Run to completion in a fresh event loop (``on_start`` gets the runner, e.g. for signals)."""
    try:
        return run_in_fresh_loop(
            lambda: SelfChatRunner(config, seeds, store, api_key=api_key, on_event=on_event),
            on_start)
    finally:
        store.close()


def summarize(run_dir: Path | str) -> dict[str, Any]:
    """Counts, spend and failure reasons of a run directory (for ``selfchat status``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory")
    if not (run_dir / "state.json").exists() and not (run_dir / "raw.jsonl").exists():
        raise UserError(f"{run_dir}: not a self-chat run directory (no state.json or raw.jsonl)")
    store = RunStore(run_dir, create=False, readonly=True)
    try:
        state = store.read_state() or {}
        done = store.done_ids()
        failures = store.latest_failures()
        tokens_in = tokens_out = 0
        for rec in store.raw_records + store.failed_records:
            usage = rec.get("usage") or {}
            tokens_in += int(usage.get("prompt_tokens", 0) or 0)
            tokens_out += int(usage.get("completion_tokens", 0) or 0)
        reasons = Counter(f.get("reason", "failed") for f in failures.values())
        model = (state.get("config") or {}).get("model", "")
        price = (state.get("config") or {}).get("price_per_1m")
        cost = ((tokens_in * price[0] + tokens_out * price[1]) / 1e6) if price else None
        total = (state.get("seeds") or {}).get("count")
        turns = [len(r.get("turns") or []) for r in store.unique_done()]
        return {
            "dir": str(run_dir),
            "model": model,
            "mode": (state.get("config") or {}).get("mode", ""),
            "endpoint": (state.get("config") or {}).get("base_url", ""),
            "seeds": total,
            "done": len(done),
            "failed": sum(1 for f in failures.values() if f.get("kind") != "rejected"),
            "rejected": sum(1 for f in failures.values() if f.get("kind") == "rejected"),
            "remaining": None if total is None else max(0, total - len(done) - len(failures)),
            "reasons": dict(reasons.most_common()),
            "tokens_in": tokens_in,
            "tokens_out": tokens_out,
            "cost": cost,
            "avg_turns": round(sum(turns) / len(turns), 2) if turns else 0.0,
            "updated": state.get("updated"),
            "warnings": store.warnings,
            "batch": batch_summary(run_dir),
        }
    finally:
        store.close()
