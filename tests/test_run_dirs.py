"""What self-chat, `sdf sample` and `sdf judge` share about their run directories: the state
file's bookkeeping (``selfchat.run.next_state``) and the event helper (``emit_event``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from baize_tui.errors import UserError
from baize_tui.redact import register_secret
from baize_tui.selfchat.run import next_state, open_run
from baize_tui.selfchat.runner import Event, RunConfig, emit_event
from baize_tui.selfchat.seeds import load_seeds
from baize_tui.selfchat.store import RunStore


def seeds(tmp_path: Path, n: int) -> list:
    path = tmp_path / f"seeds{n}.txt"
    path.write_text("\n".join(f"Question {i}?" for i in range(n)) + "\n", encoding="utf-8")
    return load_seeds(str(path))


def test_each_session_is_appended_and_created_is_kept(tmp_path: Path) -> None:
    cfg = RunConfig(model="m", base_url="http://127.0.0.1:9/v1")
    out = tmp_path / "run"
    open_run(out, cfg, seeds(tmp_path, 3)).close()
    first = json.loads((out / "state.json").read_text())
    assert [s["seeds"] for s in first["sessions"]] == [3]
    assert first["created"] == first["updated"] == first["sessions"][0]["started"]
    assert first["seeds"]["count"] == 3 and first["config"]["model"] == "m"

    open_run(out, cfg, seeds(tmp_path, 5)).close()
    second = json.loads((out / "state.json").read_text())
    assert second["created"] == first["created"]
    assert [s["seeds"] for s in second["sessions"]] == [3, 5]
    assert list(second)[:3] == ["version", "created", "updated"] and list(second)[-1] == "sessions"

    with pytest.raises(UserError, match=r"was started with other settings \(model 'm' -> 'n'\)"):
        open_run(out, RunConfig(model="n", base_url="http://127.0.0.1:9/v1"), seeds(tmp_path, 1))


def test_only_the_last_fifty_sessions_are_kept() -> None:
    state = None
    for i in range(60):
        state = next_state(state, 1, {"prompts": i}, config={"k": i})
    assert state is not None and len(state["sessions"]) == 50
    assert state["sessions"][0]["prompts"] == 10 and state["config"] == {"k": 59}


def test_events_are_redacted_and_only_chosen_kinds_logged(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "run")
    seen: list[Event] = []
    register_secret("sk-abcdef-123456")  # as a runner does with its API key
    try:
        emit_event(store, seen.append, "error", "bad key sk-abcdef-123456", logged=("error",),
                   prefix="sample ")
        emit_event(store, seen.append, "done", "fine", logged=("error",))
    finally:
        store.close()
    assert [e.message for e in seen] == ["bad key ***", "fine"]
    log = (tmp_path / "run" / "events.log").read_text()
    assert "sample error: bad key ***" in log and "sk-abcdef" not in log and "fine" not in log
