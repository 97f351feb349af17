"""From a fresh install to a first chat: first run → a model from the (local) hub → chat."""

from __future__ import annotations

import shutil
from pathlib import Path

from textual.widgets import DataTable
from ui_helpers import wait_until

from baize_tui.config import load_config, set_value
from baize_tui.paths import get_paths
from baize_tui.ui.app import BaizeApp
from baize_tui.ui.chat_screen import ChatScreen
from baize_tui.ui.models_screen import ModelsScreen
from baize_tui.ui.screens import FirstRunScreen

SIZE = (140, 44)


async def test_first_run_downloads_a_gguf_and_chats(hub, tiny_gguf: Path) -> None:
    repo = hub.add_repo("someone/tiny-baize-GGUF")
    shutil.copy(tiny_gguf, repo / "tiny-baize-Q4_K_M.gguf")
    set_value("chat.max_new_tokens", 16)  # the tiny model's context is 512 tokens
    app = BaizeApp()
    async with app.run_test(size=SIZE, notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        first_run = app.screen
        first_run.query_one("#pull-repo").value = "someone/tiny-baize-GGUF"
        first_run.query_one("#pull-file").value = "tiny-baize-Q4_K_M.gguf"
        first_run.query_one("#pull").press()
        await wait_until(pilot, lambda: app.model_state == "ready", timeout=60)
        assert isinstance(app.screen, ChatScreen)
        pulled = get_paths().models_dir / "tiny-baize-Q4_K_M.gguf"
        assert pulled.read_bytes() == tiny_gguf.read_bytes()
        assert load_config()["model"]["default"] == str(pulled)
        await pilot.press(*"hello", "enter")
        await wait_until(pilot, lambda: app.screen.last_turn is not None, timeout=60)
        assert app.screen.last_turn.stats.finish_reason in ("stop", "length")


async def test_first_run_reaches_the_models_screen(tiny_gguf: Path) -> None:
    local = get_paths().models_dir / "mine.gguf"
    local.parent.mkdir(parents=True)
    shutil.copy(tiny_gguf, local)
    app = BaizeApp()
    async with app.run_test(size=SIZE, notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        app.screen.query_one("#browse-models").press()
        await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        table = app.screen.query_one("#models", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1)
        table.focus()
        await pilot.press("d")  # make it the default
        await wait_until(pilot, lambda: load_config()["model"]["default"] != "")
        await pilot.press("f5")  # back to chat: the first run is over, the model loads
        await wait_until(pilot, lambda: app.model_state == "ready", timeout=60)
        assert isinstance(app.screen, ChatScreen)
        assert Path(app.model_spec).resolve() == local.resolve()


async def test_a_default_chosen_later_is_used_by_new_chats(tiny_gguf: Path, tmp_path: Path) -> None:
    first = get_paths().models_dir / "first.gguf"
    second = get_paths().models_dir / "second.gguf"
    first.parent.mkdir(parents=True)
    shutil.copy(tiny_gguf, first)
    shutil.copy(tiny_gguf, second)
    set_value("model.default", str(first))
    app = BaizeApp()
    async with app.run_test(size=SIZE, notifications=False) as pilot:
        await wait_until(pilot, lambda: app.model_state == "ready", timeout=60)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        screen = app.screen
        table = screen.query_one("#models", DataTable)
        await wait_until(pilot, lambda: table.row_count == 2)
        table.focus()
        table.move_cursor(row=[m.path for m in screen.models].index(second))
        await pilot.press("d")
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.model_state == "ready"
                         and Path(app.model_spec) == second, timeout=60)
        assert Path(app.screen.settings.model) == second
