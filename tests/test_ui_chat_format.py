"""The chat format in the app: shown in the status line, switched in F2, used for the next turn
(real llama.cpp on the tiny ChatML GGUF, driven by Textual's Pilot)."""

from __future__ import annotations

from pathlib import Path

from test_ui import SIZE, views
from textual.widgets import Select
from ui_helpers import ready, send, wait_until

from baize_tui.config import set_value
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT
from baize_tui.ui.app import BaizeApp
from baize_tui.ui.screens import SettingsScreen


async def test_status_shows_the_format_and_f2_switches_it(chat_ggufs: dict[str, Path]) -> None:
    set_value("model.default", str(chat_ggufs["chatml"]))
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await wait_until(pilot, lambda: screen.status.chat_format == "template (auto)",
                         what="the format in the status line")
        assert "format template (auto)" in str(screen.status.render())
        await send(pilot, screen, "Hello")
        turn = screen.last_turn
        assert turn is not None and turn.text == "Hello there!"
        assert turn.prepared.prompt.startswith("<|im_start|>user\nHello<|im_end|>")
        # Replies carry the model's name, not Baize's, for a model with its own format.
        assert views(screen)[-1].assistant_name == "Tiny ChatML Instruct"

        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        dialog = app.screen
        assert dialog.query_one("#format", Select).value == "auto"
        assert dialog.query_one("#system-prompt").text == ""  # templates: no system prompt
        dialog.query_one("#format", Select).value = "baize"
        dialog.query_one("#save").press()
        await wait_until(pilot, lambda: app.screen is screen)
        await wait_until(pilot, lambda: screen.status.chat_format == "Baize",
                         what="the new format in the status line")
        assert views(screen)[-1].assistant_name == "Baize"

        await send(pilot, screen, "Again")
        turn = screen.last_turn
        assert turn is not None
        # Baize's format now, with its default system prompt, the history re-rendered.
        assert turn.prepared.prompt == (
            f"{BAIZE_SYSTEM_PROMPT}\n[|Human|]Hello\n[|AI|]Hello there!\n[|Human|]Again\n[|AI|]")
        conv = app.history.get_conversation(screen.conversation_id)  # type: ignore[arg-type]
        assert conv.params["format"] == "baize"


async def test_a_template_that_raises_keeps_the_chat_and_names_f2(
        chat_ggufs: dict[str, Path], tmp_path: Path) -> None:
    from tiny_chat_ggufs import FORMATS, build_chat_gguf

    model = build_chat_gguf(tmp_path / "raising.gguf", "chatml", template=(
        "{% if messages|length > 1 %}{{ raise_exception('roles must alternate') }}{% endif %}"
        + FORMATS["chatml"][1]))
    app = BaizeApp(model=str(model))
    notes: list[str] = []
    shown = app.notify

    def notify(message: str, **kwargs: object) -> None:  # records, and still shows it
        notes.append(message)
        shown(message, **kwargs)  # type: ignore[arg-type]

    app.notify = notify  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "Hello")  # one message: the template renders it
        conversation = screen.conversation_id
        assert conversation is not None
        screen.prompt_box.text = "Again"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.busy and screen.prompt_box.text == "Again",
                         what="the text given back")
        assert any("roles must alternate" in n and "F2" in n and "--format" not in n
                   for n in notes), notes
        # Nothing saved for the refused turn, nothing lost of the chat.
        assert [m.text for m in app.history.thread(conversation)] == ["Hello", "Hello there!"]
        assert [v.text for v in views(screen)] == ["Hello", "Hello there!"]
    from baize_tui.config import load_config

    assert load_config()["model"]["default"] == ""  # opened on a model, default unchanged
