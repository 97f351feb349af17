"""A GGUF LoRA adapter at runtime, stored with the conversation: ``ask --lora`` and ``ask -c``,
and the app's F2 LoRA field, status line and reopened chats (real llama.cpp on the tiny ChatML
GGUF and a rank-1 adapter that makes every reply "Hi Hi …", tests/tiny_chat_ggufs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ask import ask, one_line_error
from textual.widgets import Input, Static
from tiny_chat_ggufs import build_lora_gguf
from ui_helpers import ready, send, wait_until

from baize_tui.errors import UserError
from baize_tui.history import HistoryStore

SMALL = (80, 24)


@pytest.fixture
def adapter(tmp_path: Path) -> Path:
    return build_lora_gguf(tmp_path / "adapters" / "hi-adapter.gguf")


def _lora_of(conversation_id: int) -> str | None:
    with HistoryStore() as store:
        return store.get_conversation(conversation_id).params.get("lora")


def _last_id() -> int:
    with HistoryStore() as store:
        last = store.last_conversation_id()
    assert last is not None
    return last


def test_ask_stores_the_adapter_and_continue_applies_it_again(
    chat_ggufs: dict[str, Path], adapter: Path
) -> None:
    model = str(chat_ggufs["chatml"])
    first = ask("-m", model, "--lora", str(adapter), "-n", "3", "Hello")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "Hi Hi Hi\n"
    conv = _last_id()
    assert _lora_of(conv) == str(adapter)
    # -c without --lora: the conversation's adapter is applied again
    again = ask("-c", str(conv), "-n", "3", "Hello")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "Hi Hi Hi\n"
    # the adapter is gone: one clear error, nothing added to the chat
    moved = adapter.with_name("moved.gguf")
    adapter.rename(moved)
    with HistoryStore() as store:
        before = len(store.thread(conv))
    one_line_error(ask("-c", str(conv), "Hello"), 2, str(adapter), "gone", "--lora", "--no-lora")
    with HistoryStore() as store:
        assert len(store.thread(conv)) == before
    # --lora names another file: used, and the conversation keeps it
    other = ask("-c", str(conv), "--lora", str(moved), "-n", "3", "Hello")
    assert other.returncode == 0 and other.stdout == "Hi Hi Hi\n", other.stderr
    assert _lora_of(conv) == str(moved)
    # --no-lora: the base model, and the conversation forgets the adapter
    base = ask("-c", str(conv), "--no-lora", "-n", "3", "Hello")
    assert base.returncode == 0, base.stderr
    assert base.stdout != "Hi Hi Hi\n"
    assert _lora_of(conv) is None


def test_an_adapter_made_for_another_model_is_refused_by_name(
    chat_ggufs: dict[str, Path], tmp_path: Path
) -> None:
    from baize_tui.engines.lora_match import check_lora_matches

    other = build_lora_gguf(tmp_path / "for-llama3.gguf", "llama3")
    model = chat_ggufs["chatml"]
    with pytest.raises(UserError, match="does not match"):
        check_lora_matches(model, other)
    check_lora_matches(chat_ggufs["llama3"], other)  # its own base: fine
    one_line_error(
        ask("-m", str(model), "--lora", str(other), "Hello"),
        2,
        str(other),
        "does not match",
        model.name,
    )


async def test_f2_lora_field_applies_shows_and_stores_the_adapter(
    chat_ggufs: dict[str, Path], adapter: Path, tmp_path: Path
) -> None:
    from baize_tui.ui.app import BaizeApp
    from baize_tui.ui.screens import SettingsScreen

    model = str(chat_ggufs["chatml"])
    app = BaizeApp(model=model, reopen_last=False)
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        dialog = app.screen
        field = dialog.query_one("#lora", Input)
        error = dialog.query_one(".form-error", Static)
        # a model is not an adapter: one clear error by the field, the dialog stays
        field.value = model
        await pilot.press("ctrl+s")
        await wait_until(
            pilot,
            lambda: "not a LoRA adapter" in str(error.render()),
            what="the error for a model given as the adapter",
        )
        assert app.screen is dialog and app.focused is field
        assert "--lora" not in str(error.render())  # names this form's fields, not flags
        field.value = str(tmp_path / "missing.gguf")
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: "not found" in str(error.render()))
        # the field completes paths like the other path fields
        field.value = str(adapter.parent) + "/hi-"
        await wait_until(
            pilot, lambda: field._suggestion == str(adapter), what="the path completion"
        )
        field.value = str(adapter)
        dialog.query_one("#max_new_tokens", Input).value = "3"
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: app.screen is screen)
        await wait_until(
            pilot,
            lambda: app.model_state == "ready" and app.model_lora == str(adapter),
            what="the model with the adapter",
        )
        await wait_until(
            pilot,
            lambda: "hi-adapter.gguf" in str(screen.status.render()),
            what="the adapter in the status line",
        )
        await send(pilot, screen, "Hello")
        assert screen.last_turn is not None and screen.last_turn.text == "Hi Hi Hi"
        conv = screen.conversation_id
        assert conv is not None
    assert _lora_of(conv) == str(adapter)

    # Reopening the chat applies the adapter again.
    app = BaizeApp(start_conversation=conv)
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        assert app.model_lora == str(adapter)
        await wait_until(
            pilot,
            lambda: "hi-adapter.gguf" in str(screen.status.render()),
            why=lambda: str(screen.status.render()),
        )
        await send(pilot, screen, "Hello")
        assert screen.last_turn is not None and screen.last_turn.text == "Hi Hi Hi"

    # The adapter is gone: the chat opens on the base model and says so.
    adapter.unlink()
    app = BaizeApp(start_conversation=conv)
    notes: list[str] = []
    shown = app.notify

    def notify(message: str, **kwargs: object) -> None:
        notes.append(message)
        shown(message, **kwargs)  # type: ignore[arg-type]

    app.notify = notify  # type: ignore[method-assign]
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        assert app.model_lora is None
        assert any(str(adapter) in n and "gone" in n and "F2" in n for n in notes), notes
        assert "LoRA" not in str(screen.status.render())
        assert len(screen.query("MessageView")) == 4  # the chat is all there


def test_adapters_from_baize_convert_match_their_base_and_not_another(
    tiny: dict[str, Path], tiny_gguf: Path, tmp_path: Path
) -> None:
    """The shape check agrees with what `baize-convert lora` writes (and llama.cpp loads):
    the adapter fits the GGUF of its own base, and one made for a GQA base does not."""
    from baize_convert.cli import main as convert_main
    from baize_tui.engines.lora_match import check_lora_matches

    adapter = tmp_path / "v1.gguf"
    args = ["lora", "--lora", str(tiny["lora_v1"]), "--base", str(tiny["llama"])]
    assert convert_main([*args, "-o", str(adapter)]) == 0
    check_lora_matches(tiny_gguf, adapter)  # tiny_gguf is tiny["llama"] converted
    gqa = tmp_path / "gqa.gguf"
    args = ["lora", "--lora", str(tiny["lora_gqa"]), "--base", str(tiny["llama_gqa"])]
    assert convert_main([*args, "-o", str(gqa)]) == 0
    with pytest.raises(UserError, match="does not match"):
        check_lora_matches(tiny_gguf, gqa)
