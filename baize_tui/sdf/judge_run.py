"""``sdf judge``: open a run directory for judging and run the judge to the end.

The judge's settings (model, endpoint without secrets, prompt fingerprint, shuffle seed,
sampling) are saved in ``judge_state.json``; a directory judged with other settings is refused
unless forced, so one ``judgments.jsonl`` never mixes incomparable verdicts.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from baize_tui.errors import UserError
from baize_tui.sdf import judge as jd
from baize_tui.sdf.runners import JudgeRunner, JudgeSettings
from baize_tui.sdf.store import CANDIDATES, JudgeStore, first_per_id, read_records, require_run_dir
from baize_tui.selfchat.run import next_state, refuse_other_settings, run_in_fresh_loop
from baize_tui.selfchat.runner import Event, RunConfig, RunStats

STATE_VERSION = 1


def judge_fingerprint(config: RunConfig, settings: JudgeSettings) -> dict[str, Any]:
    """What makes two judgments comparable."""
    return {"judge": config.model, "prompt_sha256": jd.prompt_fingerprint(),
            "shuffle_seed": settings.seed, "temperature": config.temperature,
            "max_tokens": config.max_tokens}


def load_items(run_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The sampled prompts (first line per id) that have candidates, and read warnings."""
    records, warnings = read_records(run_dir / CANDIDATES)
    items = []
    for rec in first_per_id(records).values():
        cands = rec.get("candidates")
        if isinstance(rec.get("prompt"), str) and isinstance(cands, list) and cands and all(
                isinstance(c, dict) and isinstance(c.get("text"), str) for c in cands):
            items.append(rec)
        else:
            warnings.append(f"{CANDIDATES}: prompt {rec.get('id')} has no usable candidates")
    return items, warnings


def open_judge(run_dir: Path | str, config: RunConfig, settings: JudgeSettings, *,
               force: bool = False) -> tuple[JudgeStore, list[dict[str, Any]]]:
    """Open the directory for judging; returns the store and the prompts to judge."""
    directory = require_run_dir(run_dir)
    items, warnings = load_items(directory)
    if not items:
        raise UserError(f"{directory}: no sampled prompts yet; run `baize-tui sdf sample` first")
    store = JudgeStore(directory, fsync=config.fsync, create=False)
    store.warnings += warnings
    state = store.read_state()
    new = judge_fingerprint(config, settings)
    if state is not None and not force:
        refuse_other_settings(store, state.get("fingerprint") or {}, new, done="judged",
                              where=directory, advice="use --force to continue anyway, or "
                              "sample into a new directory")
    store.write_state(next_state(state, STATE_VERSION, {"prompts": len(items)},
                                 config=config.public(), fingerprint=new,
                                 parse_retries=settings.parse_retries))
    return store, items


def run_judge(config: RunConfig, items: list[dict[str, Any]], store: JudgeStore, *,
              api_key: str, settings: JudgeSettings,
              on_event: Callable[[Event], None] | None = None,
              on_start: Callable[[JudgeRunner], None] | None = None) -> RunStats:
    """Judge to the end in a fresh event loop (``on_start`` gets the runner)."""
    try:
        return run_in_fresh_loop(
            lambda: JudgeRunner(config, items, store, api_key=api_key, settings=settings,
                                on_event=on_event),
            on_start)
    finally:
        store.close()
