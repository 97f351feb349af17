"""Screenshot tests (pytest-textual-snapshot) of the main screens.

Deterministic by construction: fixed terminal size, UTC, conversations imported with fixed
timestamps and stats, the model given by a relative path, no animation, no cursor blink.
Regenerate on purpose with ``pytest tests/test_ui_snapshots.py --snapshot-update`` and
review ``snapshot_report.html``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import wait_until

from baize_tui.config import set_value
from baize_tui.history import HistoryStore
from baize_tui.ui.app import BaizeApp

SIZE = (100, 32)
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC

REPLY = """\
Here is a small example.

## Reading a file

```python
from pathlib import Path

text = Path("notes.txt").read_text()
print(len(text.split()))
```

- `read_text` reads the whole file
- `split` breaks it into **words**
"""


@pytest.fixture(autouse=True)
def fixed_world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_gguf: Path) -> Any:
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("TEXTUAL_ANIMATIONS", "none")
    time.tzset()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf, models / "baize-tiny.gguf")
    monkeypatch.chdir(tmp_path)
    yield
    monkeypatch.undo()
    time.tzset()


def _conversation(title: str, user: str, reply: str, at: float) -> dict[str, Any]:
    return {
        "format": "baize-tui.conversation",
        "version": 1,
        "conversation": {"title": title, "system_prompt": "You are Baize.",
                         "model": "models/baize-tiny.gguf",
                         "params": {"max_new_tokens": 64, "temperature": 0.7},
                         "created_at": at, "updated_at": at + 60, "archived": False,
                         "current_leaf_id": 2},
        "messages": [
            {"id": 1, "parent_id": None, "role": "user", "text": user, "created_at": at},
            {"id": 2, "parent_id": 1, "role": "assistant", "text": reply, "created_at": at + 5,
             "model": "models/baize-tiny.gguf", "prompt_tokens": 120,
             "completion_tokens": 64, "ttft_s": 0.12, "tokens_per_s": 31.5,
             "finish_reason": "stop", "complete": True},
        ],
    }


def make_app() -> BaizeApp:
    set_value("model.default", "models/baize-tiny.gguf")
    set_value("chat.max_new_tokens", 64)
    store = HistoryStore()
    store.import_json(_conversation("Sorting a list", "How do I sort a list?",
                                    "Use `sorted(items)`.", T0))
    store.import_json(_conversation("Zebra facts", "Tell me about zebras", "They are striped.",
                                    T0 + 3600))
    last = store.import_json(_conversation("Count words in a file",
                                           "How do I count the words in a file?", REPLY,
                                           T0 + 7200))
    store.close()
    return BaizeApp(start_conversation=last)


async def settle(pilot: Any) -> None:
    app = pilot.app
    await wait_until(pilot, lambda: app.model_state == "ready", what="the model")
    no_blink(app)
    await pilot.pause(0.3)  # no nameable condition for the final styles
    await pilot.wait_for_scheduled_animations()


def no_blink(app: Any) -> None:
    """Cursors drawn steadily. TextArea's line cache keys a line by the blink phase only, so a
    line cached in the "off" phase would be reused once blinking stops and the cursor cell would
    go missing at random: clearing the cache (notify_style_update) redraws it from the state."""
    for area in app.screen.query("TextArea, Input"):
        area.cursor_blink = False
        area.notify_style_update()
        area.refresh()


def test_chat_screen(snap_compare: Any) -> None:
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle)


def test_settings_modal(snap_compare: Any) -> None:
    async def open_settings(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("f2")
        await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == "SettingsScreen")
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=open_settings)


def test_sidebar_search(snap_compare: Any) -> None:
    async def search(pilot: Any) -> None:
        await settle(pilot)
        await pilot.press("ctrl+f", *"zebra")
        await wait_until(pilot, lambda: "Search: 1" in str(
            pilot.app.screen.query_one("#list-heading").render()))
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=search)


def test_first_run_screen(snap_compare: Any) -> None:
    async def wait(pilot: Any) -> None:
        await wait_until(pilot, lambda: type(pilot.app.screen).__name__ == "FirstRunScreen")
        no_blink(pilot.app)
        await pilot.pause(0.3)  # as in settle(): no nameable condition for the final styles

    assert os.environ.get("BAIZE_HOME")
    assert snap_compare(BaizeApp(), terminal_size=SIZE, run_before=wait)
