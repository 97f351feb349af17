"""Pilot tests of the Textual app: real llama.cpp on the tiny GGUF, real history store.

The scripted engine (tests/ui_helpers.py) is used only where a test needs a reply it can
predict: stopping mid-stream (a slow reply), exact Markdown to copy or compare with a
one-shot render, many lines to scroll, context-size arithmetic. The tiny model's replies are
random text.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from ui_helpers import ScriptedEngine, ready, scripted_app, send, settled, wait_until

from baize_tui.config import load_config, set_value
from baize_tui.history import HistoryStore
from baize_tui.ui.app import BaizeApp
from baize_tui.ui.chat_screen import ChatScreen
from baize_tui.ui.screens import (
    ConfirmScreen,
    FirstRunScreen,
    HelpScreen,
    PromptScreen,
    SettingsScreen,
)
from baize_tui.ui.sidebar import ConversationItem, Sidebar
from baize_tui.ui.widgets import ChatInput, MessageView

SIZE = (110, 36)


@pytest.fixture
def gguf_config(tiny_gguf: Path, baize_home: Path) -> Path:
    """config.toml naming the tiny GGUF, with a reply budget that fits its 512-token context."""
    set_value("model.default", str(tiny_gguf))
    set_value("chat.max_new_tokens", 24)
    set_value("chat.temperature", 0.8)
    return tiny_gguf


def views(screen: ChatScreen) -> list[MessageView]:
    return list(screen.transcript.query(MessageView))


# --------------------------------------------------------------------------- real engine


async def test_send_streams_reply_and_saves_it(gguf_config: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        assert app.engine is not None and app.engine.spec == str(gguf_config)
        await pilot.press(*"Hello there", "enter")
        assert screen.prompt_box.text == ""
        await wait_until(pilot, lambda: screen.last_turn is not None and not screen.busy)
        turn = screen.last_turn
        assert turn is not None and turn.stats.finish_reason in ("stop", "length")
        shown = views(screen)
        assert [v.role for v in shown] == ["user", "assistant"]
        assert shown[0].text == "Hello there"
        assert shown[1].text == turn.text

        history = app.history
        (conv,) = history.list_conversations()
        assert conv.title == "Hello there"
        thread = history.thread(conv.id)
        assert [m.role for m in thread] == ["user", "assistant"]
        assert thread[1].text == turn.text
        assert thread[1].complete and thread[1].finish_reason == turn.stats.finish_reason
        assert thread[1].completion_tokens == turn.stats.completion_tokens
        # The sidebar lists it; the status line has the model and the context meter.
        items = list(screen.sidebar.query(ConversationItem))
        assert [i.conversation_id for i in items] == [conv.id]
        status = screen.status
        assert status.model_label == gguf_config.name
        assert status.n_ctx == 512 and status.used_tokens and status.used_tokens <= 512
        assert status.tokens_per_s is None or status.tokens_per_s > 0


async def test_regenerate_makes_a_sibling_and_arrows_browse(gguf_config: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "Tell me a story")
        first = screen.last_turn
        assert first is not None
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: screen.last_turn is not first and not screen.busy)
        second = screen.last_turn
        assert second is not None and second.reply_message_id != first.reply_message_id
        history = app.history
        siblings = history.siblings(second.reply_message_id)
        assert [m.id for m in siblings] == [first.reply_message_id, second.reply_message_id]
        assert second.user_message_id == first.user_message_id  # same question, new answer
        reply = views(screen)[-1]
        assert reply.info.branch == (2, 2)
        assert len(views(screen)) == 2

        # ← shows the first answer, → the second again (on the focused message).
        reply.focus()
        await wait_until(pilot, lambda: app.focused is reply)
        await pilot.press("left")
        await wait_until(pilot, lambda: views(screen)[-1].info.message_id
                         == first.reply_message_id)
        assert views(screen)[-1].text == first.text
        assert views(screen)[-1].info.branch == (1, 2)
        conv_id = screen.conversation_id
        assert conv_id is not None
        assert history.get_conversation(conv_id).current_leaf_id == first.reply_message_id
        await pilot.press("alt+right")
        await wait_until(pilot, lambda: views(screen)[-1].info.message_id
                         == second.reply_message_id)
        assert views(screen)[-1].text == second.text


async def test_edit_last_message_and_resend_branches(gguf_config: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "first question")
        await send(pilot, screen, "second question")
        original = screen.last_turn
        assert original is not None
        await pilot.press("ctrl+t")
        assert screen.prompt_box.text == "second question"
        screen.prompt_box.text = "second question, edited"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.last_turn is not original and not screen.busy)
        edited = screen.last_turn
        assert edited is not None
        history = app.history
        users = history.siblings(edited.user_message_id)
        assert [m.text for m in users] == ["second question", "second question, edited"]
        conv_id = screen.conversation_id
        assert conv_id is not None
        thread = history.thread(conv_id)
        assert [m.text for m in thread if m.role == "user"] == [
            "first question", "second question, edited"]
        shown = views(screen)
        assert [v.text for v in shown if v.role == "user"] == [
            "first question", "second question, edited"]
        # The edited message's prompt carries the first turn, not the replaced one.
        assert "second question\n" not in edited.prepared.prompt
        assert "first question" in edited.prepared.prompt


async def test_settings_change_applies_to_next_turn(gguf_config: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "hi")
        before = screen.last_turn
        assert before is not None and before.prepared.prompt.startswith("The following is")

        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        dialog = app.screen
        dialog.query_one("#system-prompt").text = "You are terse."
        dialog.query_one("#max_new_tokens").value = "3"
        dialog.query_one("#seed").value = "7"
        dialog.query_one("#save").press()
        await wait_until(pilot, lambda: app.screen is screen)
        assert screen.settings is not None and screen.settings.params.max_new_tokens == 3

        await send(pilot, screen, "again")
        turn = screen.last_turn
        assert turn is not None and turn is not before
        assert turn.prepared.prompt.startswith("You are terse.\n[|Human|]hi")
        assert turn.stats.completion_tokens <= 3
        assert turn.stats.seed == 7
        conv = app.history.get_conversation(screen.conversation_id)  # type: ignore[arg-type]
        assert conv.system_prompt == "You are terse."
        assert conv.params["max_new_tokens"] == 3 and conv.params["seed"] == 7

        # A bad value is refused in the dialog, with the field named.
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#temperature").value = "-1"
        app.screen.query_one("#save").press()
        await pilot.pause()
        assert isinstance(app.screen, SettingsScreen)
        assert "temperature" in str(app.screen.query_one(".form-error").render()).lower()
        await pilot.press("escape")  # edited: asks before throwing the edit away
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: app.screen is screen)


async def test_new_chat_remove_turn_and_reopen(gguf_config: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "chat one")
        first_id = screen.conversation_id
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert screen.conversation_id is None and views(screen) == []
        await send(pilot, screen, "chat two")
        await send(pilot, screen, "chat two again")
        assert screen.conversation_id not in (None, first_id)
        titles = [c.title for c in app.history.list_conversations()]
        assert titles == ["chat two", "chat one"]  # newest first

        await pilot.press("f9")  # remove the last turn
        await wait_until(pilot, lambda: len(views(screen)) == 2)
        thread = app.history.thread(screen.conversation_id)  # type: ignore[arg-type]
        assert [m.text for m in thread if m.role == "user"] == ["chat two"]

        # Open the first chat from the sidebar.
        screen.sidebar.query_one("#conversations").focus()
        items = list(screen.sidebar.query(ConversationItem))
        index = [i.conversation_id for i in items].index(first_id)
        screen.sidebar.query_one("#conversations").index = index
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.conversation_id == first_id)
        assert views(screen)[0].text == "chat one"


# --------------------------------------------------------------------------- scripted engine


async def test_escape_stops_and_keeps_the_partial_reply_marked_stopped() -> None:
    # Held after 30 words: still streaming when escape comes, however slow the machine.
    engine = ScriptedEngine([f"word{i} " for i in range(400)], gate=threading.Event(),
                            gate_after=30)
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await pilot.press(*"go on", "enter")
        await wait_until(pilot, lambda: len(views(screen)) == 2
                         and len(views(screen)[-1].text) > 60, what="some reply text")
        await pilot.press("escape")
        await wait_until(pilot, lambda: screen.last_turn is not None and not screen.busy)
        turn = screen.last_turn
        assert turn.stats.finish_reason == "cancelled"
        assert 0 < len(turn.text) < len("".join(engine.pieces).strip())
        saved = app.history.get_message(turn.reply_message_id)
        assert saved.text == turn.text and saved.finish_reason == "cancelled"
        assert not saved.complete
        reply = views(screen)[-1]
        assert reply.text == turn.text
        assert "stopped" in reply._header().plain
        # The app is usable again: the next message goes through.
        engine.pieces = ["fine."]
        await send(pilot, screen, "ok")
        assert screen.last_turn.text == "fine."


async def test_partial_reply_is_saved_while_streaming() -> None:
    # 3,000 pieces 10 ms apart: still streaming when the partial save is checked, even on a
    # loaded machine (the reply budget and context are raised to let it run that long).
    engine = ScriptedEngine([f"w{i} " for i in range(3000)], delay=0.01, n_ctx=8192)
    set_value("chat.max_new_tokens", 3000)
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await pilot.press(*"long one", "enter")
        await wait_until(pilot, lambda: len(views(screen)) == 2
                         and views(screen)[-1].info.message_id is not None)
        reply_id = views(screen)[-1].info.message_id
        assert reply_id is not None
        # Written at least once a second while it streams, marked incomplete.
        await wait_until(pilot, lambda: len(app.history.get_message(reply_id).text) > 0,
                         timeout=5, what="a partial save")
        partial = app.history.get_message(reply_id)
        assert screen.busy and not partial.complete and partial.finish_reason is None
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy)


async def test_markup_in_model_output_is_shown_literally_and_copy_works() -> None:
    reply = ("Use [bold]this[/bold] and [link=x]that[/] literally.\n\n"
             "```python\nprint('[red]hi[/red]')\n```\n\nMore ```inline``` text.")
    engine = ScriptedEngine([reply[i:i + 7] for i in range(0, len(reply), 7)])
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "[bold]not markup[/bold]")
        shown = views(screen)
        assert shown[0].text == "[bold]not markup[/bold]"
        assert shown[1].text == reply
        await settled(pilot)
        rendered = "\n".join(str(b.render()) for b in shown[1].query("MarkdownParagraph"))
        assert "[bold]this[/bold]" in rendered
        await pilot.press("f3")
        assert app.clipboard == reply
        await pilot.press("f4")
        assert app.clipboard == "print('[red]hi[/red]')\n"
        # The same from the focused message's own keys.
        shown[1].focus()
        await pilot.press("c")
        assert app.clipboard == reply


async def test_markdown_failure_falls_back_to_plain_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from textual.widgets import Markdown, Static

    engine = ScriptedEngine(["**fine** text"])
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "hi")

        real_update = Markdown.update

        def broken(self, markdown):  # type: ignore[no-untyped-def]
            if "BOOM" in markdown:
                raise ValueError("renderer blew up")
            return real_update(self, markdown)

        monkeypatch.setattr(Markdown, "update", broken)
        view = views(screen)[-1]
        await view.set_text("# BOOM *text*")
        await pilot.pause()
        assert view.text == "# BOOM *text*"
        plain = view.query_one(".plain-body", Static)
        assert "# BOOM *text*" in str(plain.render())


async def test_input_keys_newline_and_recall(gguf_config: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        box = screen.prompt_box
        await pilot.press("a", "ctrl+j", "b", "shift+enter", "c")
        assert box.text == "a\nb\nc"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.last_turn is not None and not screen.busy)
        assert views(screen)[0].text == "a\nb\nc"
        assert box.text == ""
        await pilot.press("up")
        assert box.text == "a\nb\nc"


async def test_search_rename_archive_delete(gguf_config: Path) -> None:
    store = HistoryStore()
    ids = {}
    for title, words in (("alpha", "the quick zebra jumps"), ("beta", "nothing to see"),
                         ("gamma", "another line")):
        cid = store.create_conversation(system_prompt="s", model="m", params={})
        user = store.add_message(cid, parent_id=None, role="user", text=f"{title}: {words}")
        store.add_message(cid, parent_id=user, role="assistant", text=f"reply to {title}")
        ids[title] = cid
    store.close()

    app = BaizeApp(reopen_last=False)  # the chats name a model "m" that does not exist
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        sidebar = screen.sidebar

        def listed() -> list[int]:
            return [i.conversation_id for i in sidebar.query(ConversationItem)]

        assert listed() == [ids["gamma"], ids["beta"], ids["alpha"]]
        # Search (FTS) narrows the list; Enter in the box jumps to the results.
        await pilot.press("ctrl+f")
        await pilot.press(*"zebr")
        await wait_until(pilot, lambda: listed() == [ids["alpha"]], what="search results")
        await pilot.press("enter", "enter")
        await wait_until(pilot, lambda: screen.conversation_id == ids["alpha"])
        assert views(screen)[0].text == "alpha: the quick zebra jumps"
        sidebar.query_one("#search").value = ""
        await wait_until(pilot, lambda: len(listed()) == 3)

        # Rename the highlighted chat.
        list_view = sidebar.query_one("#conversations")
        list_view.focus()
        list_view.index = listed().index(ids["beta"])
        await pilot.press("r")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#answer").value = "Renamed chat"
        await pilot.press("enter")
        await wait_until(pilot, lambda: app.history.get_conversation(ids["beta"]).title
                         == "Renamed chat")

        # Archive it, see it in the archive view, restore it.
        await wait_until(pilot, lambda: app.screen is screen)
        list_view.focus()
        list_view.index = listed().index(ids["beta"])
        await pilot.press("a")
        await wait_until(pilot, lambda: app.history.get_conversation(ids["beta"]).archived)
        await wait_until(pilot, lambda: ids["beta"] not in listed())
        await pilot.press("v")
        await wait_until(pilot, lambda: listed() == [ids["beta"]])
        list_view.index = 0
        await pilot.press("a")
        await wait_until(pilot, lambda: not app.history.get_conversation(ids["beta"]).archived)
        await pilot.press("v")
        await wait_until(pilot, lambda: ids["beta"] in listed())

        # Delete asks first: "no" keeps it, "yes" deletes it.
        list_view.index = listed().index(ids["gamma"])
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is screen)
        assert ids["gamma"] in listed()
        list_view.focus()
        list_view.index = listed().index(ids["gamma"])
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_until(pilot, lambda: ids["gamma"] not in listed())
        assert ids["gamma"] not in [c.id for c in app.history.list_conversations(
            include_archived=True)]


async def test_export_chat(gguf_config: Path, tmp_path: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "A question")
        answer = screen.last_turn.text
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
        app.screen.query_one("#answer").value = str(tmp_path / "chat.md")
        await pilot.press("enter")
        await wait_until(pilot, lambda: (tmp_path / "chat.md").exists())
        # (read without newline translation: the tiny model's reply may hold a bare "\r")
        with (tmp_path / "chat.md").open(encoding="utf-8", newline="") as fh:
            text = fh.read()
        assert "## User\n\nA question" in text and "## Assistant" in text
        assert answer.strip() in text
        screen.export_to(tmp_path / "chat.json")
        data = json.loads((tmp_path / "chat.json").read_text())
        assert [m["text"] for m in data["messages"]] == ["A question", answer]


async def test_first_run_flow(tiny_gguf: Path, tmp_path: Path) -> None:
    app = BaizeApp()
    assert app.model_spec == ""
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        first_run = app.screen
        # A file that is not a GGUF is refused with the reason.
        bogus = tmp_path / "notes.txt"
        bogus.write_text("hello")
        first_run.query_one("#gguf-path").value = str(bogus)
        first_run.query_one("#open-gguf").press()
        await pilot.pause()
        assert "not a GGUF" in str(
            first_run.query_one("#choice-file .choice-error").render())
        # The endpoint needs a URL.
        first_run.query_one("#endpoint-model").value = "baize"
        first_run.query_one("#use-endpoint").press()
        await pilot.pause()
        assert "URL" in str(first_run.query_one("#choice-endpoint .choice-error").render())
        # A real GGUF is taken, remembered in the config, and loaded.
        first_run.query_one("#gguf-path").value = str(tiny_gguf)
        first_run.query_one("#open-gguf").press()
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert load_config()["model"]["default"] == str(tiny_gguf.resolve())
        await wait_until(pilot, lambda: app.model_state == "ready")
        assert app.engine is not None


async def test_first_run_endpoint_choice_is_remembered() -> None:
    app = BaizeApp(engine_factory=lambda spec, config, n_ctx: ScriptedEngine(["x"], spec=spec))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        app.screen.query_one("#endpoint-url").value = "http://127.0.0.1:9/v1"
        app.screen.query_one("#endpoint-model").value = "baize-7b"
        app.screen.query_one("#use-endpoint").press()
        await wait_until(pilot, lambda: app.model_state == "ready")
        config = load_config()
        assert config["model"]["default"] == "openai:baize-7b"
        assert config["openai"]["base_url"] == "http://127.0.0.1:9/v1"


async def test_keymap_help_theme_and_modes(gguf_config: Path) -> None:
    set_value("ui.keymap", {"chat.new": "ctrl+g"})
    set_value("ui.theme", "nord")
    app = BaizeApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        assert app.theme == "nord"
        await send(pilot, screen, "hello")
        assert screen.conversation_id is not None
        await pilot.press("ctrl+g")  # remapped "new chat"
        await wait_until(pilot, lambda: screen.conversation_id is None)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = {row[2]: row[0] for row in app.screen.rows}
        assert rows["chat.new"] == "ctrl+g" and rows["chat.stop"] == "escape"
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is screen)
        # Themes are persisted.
        app.theme = "textual-light"
        await pilot.pause()
        assert load_config()["ui"]["theme"] == "textual-light"
        # Other modes are registered and reachable by key.
        await pilot.press("f8")
        await wait_until(pilot, lambda: app.current_mode == "models")
        await pilot.pause()
        assert app.screen is not screen
        await pilot.press("f5")
        await wait_until(pilot, lambda: app.screen is screen)
        # Every chat action is in the command palette.
        titles = {c.title for c in app.get_system_commands(screen)}
        for title in ("Stop generating", "Regenerate reply", "Edit last message",
                      "Remove last turn", "New chat", "Previous branch", "Next branch",
                      "Copy message", "Export chat", "Chat settings", "Search chats",
                      "Go to Self-chat", "Go to Training", "Go to Models"):
            assert title in titles


async def test_context_overflow_gives_the_text_back() -> None:
    engine = ScriptedEngine(["ok"], n_ctx=600)
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        long_text = "word " * 2000
        screen.prompt_box.text = long_text
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.busy and screen.prompt_box.text != "")
        assert screen.prompt_box.text == long_text
        assert views(screen) == []
        assert app.history.list_conversations() == []
        assert isinstance(screen.prompt_box, ChatInput)


async def test_dropped_turns_are_shown_in_the_status_line() -> None:
    set_value("chat.max_new_tokens", 16)
    set_value("chat.system_prompt", "Be brief.")
    engine = ScriptedEngine(["ok"], n_ctx=140)
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        for n in range(3):
            await send(pilot, screen, f"message {n} " + "padding words " * 12)
        assert screen.last_turn.dropped_turns >= 1
        assert screen.status.dropped_turns == screen.last_turn.dropped_turns
        assert "left out to fit the context" in screen.status.render().plain
        assert engine.prompts[-1].startswith("Be brief.")
        assert "message 0" not in engine.prompts[-1]


async def test_quit_while_generating_saves_the_partial_reply() -> None:
    engine = ScriptedEngine([f"w{i} " for i in range(3000)], delay=0.01, n_ctx=8192)
    set_value("chat.max_new_tokens", 3000)  # still streaming when ctrl+q comes, however slow
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await pilot.press(*"go", "enter")
        await wait_until(pilot, lambda: len(views(screen)) == 2
                         and len(views(screen)[-1].text) > 20)
        await pilot.press("ctrl+q")
    with HistoryStore() as history:
        (conv,) = history.list_conversations()
        reply = history.thread(conv.id)[-1]
    assert reply.role == "assistant" and reply.text.startswith("w0 w1")
    assert reply.finish_reason == "cancelled"
    assert engine.closed


async def test_transcript_follows_the_reply_until_the_user_scrolls_up() -> None:
    # Long enough (30 s at most; escape ends it) to be still streaming on a loaded machine.
    engine = ScriptedEngine([f"line {i}\n\n" for i in range(3000)], delay=0.01, n_ctx=8192)
    set_value("chat.max_new_tokens", 3000)
    app = scripted_app(engine)
    async with app.run_test(size=(110, 24)) as pilot:
        screen = await ready(pilot, app)
        transcript = screen.transcript
        await pilot.press(*"many lines", "enter")
        await wait_until(pilot, lambda: transcript.max_scroll_y > 20, what="overflowing text")
        await settled(pilot)
        assert transcript.scroll_y == transcript.max_scroll_y  # anchored
        transcript.scroll_home(animate=False)  # what a user's scroll does: releases the anchor
        await settled(pilot)
        height = transcript.max_scroll_y
        await wait_until(pilot, lambda: transcript.max_scroll_y > height + 10)
        assert transcript.scroll_y < 5  # left where the user put it
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy)


async def test_streamed_reply_looks_exactly_like_a_one_shot_render() -> None:
    _bench_line_signature()  # puts bench/ on the path
    from ui_stream_bench import reply_text

    set_value("chat.max_new_tokens", 3000)
    pieces = reply_text(2000)  # ~7,200 characters: streamed into several segments
    engine = ScriptedEngine(pieces, delay=0.001, n_ctx=8192)
    app = scripted_app(engine)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await ready(pilot, app)
        await pilot.press(*"go", "enter")
        await wait_until(pilot, lambda: len(views(screen)) == 2
                         and bool(spacers(views(screen)[-1].body)),
                         what="finished segments far above collapsed")
        await wait_until(pilot, lambda: not screen.busy, what="the reply")
        await wait_until(pilot, lambda: not spacers(views(screen)[-1].body),
                         what="the finished segments back")
        view = views(screen)[-1]
        assert len(view.segments) >= 3  # later blocks went into new segments as it streamed
        assert not spacers(view.body) and all(seg.display for seg in view.segments)
        assert view.text == "".join(pieces).strip()
        await settled(pilot)
        streamed = await _assert_draws_like_a_one_shot_render(pilot, view)
        assert len(streamed) > 60 and len(view.segments) == 1


async def _streaming_view(pilot, app: BaizeApp) -> MessageView:  # type: ignore[no-untyped-def]
    """A reply view in the app's transcript, streaming; the test feeds it."""
    screen = await ready(pilot, app)
    view = MessageView("assistant")
    await screen.transcript.mount(view)
    view.start_stream()
    return view


async def _assert_draws_like_a_one_shot_render(pilot, view: MessageView) -> list:  # type: ignore[no-untyped-def]
    """Assert that ``view`` shows exactly (every line, with its colours) what rendering its
    whole text in one go shows; returns the lines."""
    line_signature = _bench_line_signature()
    streamed = line_signature(view.body)
    await view.set_text(view.text)
    await settled(pilot)
    assert line_signature(view.body) == streamed
    return streamed


def _bench_line_signature():  # type: ignore[no-untyped-def]
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    from ui_stream_bench import line_signature

    return line_signature


async def test_a_code_fence_open_across_a_segment_split_streams_exactly() -> None:
    """A new segment that starts inside an unfinished code fence (blank lines in it) must keep
    streaming it as one fence: finished segments are not drawn again, so what the stream drew
    is what stays. (``Markdown.update`` then ``append`` split such a fence into paragraphs.)"""
    from baize_tui.ui import widgets

    prose = " ".join(f"word{i}" for i in range(widgets.SEGMENT_CHARS // 6)) + "\n\n"
    chunks = [
        prose,
        "A paragraph before the code.\n\n```python\ndef one():\n    return 1\n\n",
        "def two():\n    return 2\n\n\ndef three():\n",
        "    return 3\n```\n\n- a list\n- after it\n",
    ]
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(100, 30)) as pilot:
        view = await _streaming_view(pilot, app)
        await view.feed(chunks[0])
        await view.flush()
        await view.feed(chunks[1])
        await view.flush()
        assert len(view.segments) == 2  # the split: the new segment opens with the fence
        first_blocks = list(view.segments[0].children)
        for chunk in chunks[2:]:
            await settled(pilot)
            await view.feed(chunk)
            await view.flush()
        await view.finish_stream()
        await settled(pilot)
        assert list(view.segments[0].children) == first_blocks  # never drawn again
        await _assert_draws_like_a_one_shot_render(pilot, view)


MIXED_MARKDOWN = """Title line
==========

Intro paragraph with *emphasis* and `code`.

| name | value |
|------|-------|
| a    | 1     |
| b    | 2     |

1. first
   - nested one
   - nested two
2. second

3. loose item after a blank

> quote line one
> - list in quote

Sub title
---------

***

```
plain fence

with a blank line
```

    indented code block
    second line

Final words with a [link](https://example.com) and **bold**.
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_streamed_markdown_of_every_kind_matches_a_one_shot_render(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables, setext headings, nested and loose lists, quotes, rules, fences and indented
    code, streamed in random pieces across many small segments, end up drawn exactly as a
    one-shot render draws them (nothing is drawn a second time to make it so)."""
    import random

    from baize_tui.ui import widgets

    monkeypatch.setattr(widgets, "SEGMENT_CHARS", 60)
    rnd = random.Random(seed)
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(100, 60)) as pilot:
        view = await _streaming_view(pilot, app)
        at = 0
        while at < len(MIXED_MARKDOWN):
            size = rnd.randint(1, 40)
            await view.feed(MIXED_MARKDOWN[at:at + size])
            at += size
            if rnd.random() < 0.5:
                await view.flush()
            await (settled(pilot) if rnd.random() < 1 / 3 else pilot.pause())
        await view.finish_stream()
        await settled(pilot)
        assert len(view.segments) >= 2  # split at least once (how often depends on pacing)
        await _assert_draws_like_a_one_shot_render(pilot, view)


async def test_finished_segments_are_not_laid_out_again_while_the_reply_grows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a segment is finished, writes into the live one must not make Textual arrange the
    finished segment's blocks again (that cost grew with the whole reply)."""
    import textual.widget

    from baize_tui.ui import widgets

    prose = " ".join(f"word{i}" for i in range(widgets.SEGMENT_CHARS // 6)) + "\n\n"
    section = "- one\n- two\n\n```python\nx = 1\n```\n\n> quote\n\n"
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(100, 30)) as pilot:
        view = await _streaming_view(pilot, app)
        for text in (section * 3 + prose, section, prose):
            await view.feed(text)
            await view.flush()
        await settled(pilot)
        assert len(view.segments) == 2
        finished = view.segments[0]
        arranged: list[object] = []
        real_arrange = textual.widget.arrange

        def counting_arrange(widget, *args, **kwargs):  # type: ignore[no-untyped-def]
            if widget is finished or finished in widget.ancestors:
                arranged.append(widget)
            return real_arrange(widget, *args, **kwargs)

        monkeypatch.setattr(textual.widget, "arrange", counting_arrange)
        for i in range(6):
            await view.feed(f"more words in the live tail, line {i}\n" * 3)
            await view.flush()
            await settled(pilot)
        assert view.segments[0] is finished and view._live is not finished
        assert arranged == []
        await view.finish_stream()


async def test_one_layout_pass_per_streamed_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each write that adds lists, quotes and fences is laid out in one pass, which arranges
    the screen once. (Textual ran a second pass for the sizes the first one set, a third for
    blocks that reported late, and rebuilt its map of all widgets in between; see
    layout_passes.py.)"""
    import textual._compositor
    import textual.screen

    from baize_tui.ui import widgets

    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(100, 30)) as pilot:
        view = await _streaming_view(pilot, app)
        # Enough to scroll: a scroll bar appearing is a layout of its own.
        await view.feed("".join(f"Paragraph {i} to start with.\n\n" for i in range(20)))
        await view.flush()
        await settled(pilot)
        passes = _count_calls(monkeypatch, textual.screen.Screen, "_refresh_layout")
        arrangements = _count_calls(monkeypatch, textual._compositor.Compositor, "_arrange_root")
        per_write = []
        for i in range(5):
            passes.clear()
            arrangements.clear()
            await view.feed(f"## Part {i}\n\n- item one\n- item *two*\n\n> a quote {i}\n\n"
                            f"1. first\n2. second\n\n```python\nx = {i}\n```\n\nAnd")
            await view.flush()
            await settled(pilot)
            per_write.append((len(passes), len(arrangements)))
        assert len(view.segments) == 1  # no segment split so far
        assert per_write == [(1, 1)] * 5, per_write

        # A write that ends the live segment and starts the next is one pass too.
        monkeypatch.setattr(widgets, "SEGMENT_CHARS", 60)
        passes.clear()
        arrangements.clear()
        await view.feed(" text.\n\n- a new list\n- in a new segment\n\n> and a quote\n")
        await view.flush()
        await settled(pilot)
        assert len(view.segments) == 2
        assert (len(passes), len(arrangements)) == (1, 1)
        await view.finish_stream()


async def test_call_after_layout_waits_for_the_pass_that_a_batch_held_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Bringing back what stood aside costs a layout, so it waits for the frame with the
    reply's last words. ``call_after_refresh`` callbacks can run before that frame when a
    batch update (such as the last append's) held it back; ``call_after_layout`` cannot."""
    import textual.screen
    from textual.widgets import Static

    events: list[str] = []
    real_refresh_layout = textual.screen.Screen._refresh_layout

    def recording_refresh_layout(screen, *args, **kwargs):  # type: ignore[no-untyped-def]
        real_refresh_layout(screen, *args, **kwargs)
        events.append("layout")

    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await ready(pilot, app)
        await settled(pilot)
        monkeypatch.setattr(textual.screen.Screen, "_refresh_layout", recording_refresh_layout)
        with app.batch_update():
            await screen.transcript.mount(Static("new line"))
            screen.call_after_layout(events.append, "after layout")
            screen.call_after_refresh(events.append, "after refresh")
            await wait_until(pilot, lambda: "after refresh" in events,
                             what="the held-back frame's callbacks")
            assert "after refresh" in events  # the held-back frame ran its callbacks...
            assert "after layout" not in events  # ...but no layout pass has run
        await wait_until(pilot, lambda: "after layout" in events, what="the layout pass")
        assert events.index("layout") < events.index("after layout")
        assert events.count("after layout") == 1


async def test_the_spinner_of_a_header_out_of_view_costs_no_frame(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Redrawing a widget scrolled out of view makes Textual rebuild its map of every widget:
    the reply's spinner is drawn only while its header is on screen."""
    import textual._compositor

    from baize_tui.ui.widgets import _SPINNER

    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(100, 30)) as pilot:
        view = await _streaming_view(pilot, app)
        header = view.query_one(".message-header")
        await settled(pilot)
        shown = str(header.render())
        view.spin()
        await settled(pilot)
        assert str(header.render()) != shown  # in view: it turns

        await view.feed("".join(f"Paragraph {i} of a long reply.\n\n" for i in range(40)))
        await view.flush()
        await settled(pilot)
        app.screen.transcript.scroll_end(animate=False)
        await settled(pilot)
        assert not view._header_in_view()
        arrangements = _count_calls(monkeypatch, textual._compositor.Compositor, "_arrange_root")
        for _ in range(3):
            view.spin()
            await settled(pilot)
        assert arrangements == []
        app.screen.transcript.scroll_home(animate=False)
        await settled(pilot)
        view.spin()
        await settled(pilot)
        assert f"{_SPINNER[view._spin % len(_SPINNER)]} generating" in str(header.render())
        await view.finish_stream()


def _count_calls(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> list[int]:
    """Count calls of ``owner.name`` from now on (the list grows by one per call)."""
    calls: list[int] = []
    real = getattr(owner, name)

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counting)
    return calls


async def test_full_collections_are_held_while_a_reply_streams() -> None:
    import gc

    from baize_tui.ui import chat_screen
    from baize_tui.ui.gc_pacing import pacer

    before = gc.get_threshold()
    gate = threading.Event()
    engine = ScriptedEngine([f"w{i} " for i in range(60)], gate=gate, gate_after=5)
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await pilot.press(*"go", "enter")
        await wait_until(pilot, lambda: len(views(screen)) == 2 and views(screen)[-1].text)
        assert screen.busy and pacer.holding and gc.get_threshold()[2] > 1_000_000
        gate.set()
        await wait_until(pilot, lambda: not screen.busy)
        await wait_until(pilot, lambda: not pacer.holding, timeout=chat_screen.GC_AFTER_REPLY + 20,
                         what="full collections released after the reply")
        assert not pacer.holding and gc.get_threshold() == before


def _long_conversation(turns: int) -> int:
    with HistoryStore() as history:
        cid = history.create_conversation(system_prompt="s", model="scripted", params={})
        parent = None
        for n in range(turns):
            parent = history.add_message(cid, parent_id=parent, role="user",
                                         text=f"question {n}")
            parent = history.add_message(
                cid, parent_id=parent, role="assistant",
                text=f"## Answer {n}\n\n- one point\n- another point\n\n```python\nx = {n}\n```\n")
    return cid


def spacers(container) -> list:  # type: ignore[no-untyped-def]
    from baize_tui.ui.collapse import CollapsedSpace

    return [child for child in container.children if isinstance(child, CollapsedSpace)]


def _app_over_long_history(pieces: int, delay: float,
                           gate: threading.Event | None = None,
                           gate_after: int = 0) -> BaizeApp:
    """An app showing a 20-turn conversation, whose model streams ``pieces`` words (all of
    them: the reply budget is raised to match), held at ``gate`` after ``gate_after``."""
    cid = _long_conversation(20)
    set_value("chat.max_new_tokens", pieces)
    engine = ScriptedEngine([f"word{i} " for i in range(pieces)], delay=delay, n_ctx=8192,
                            gate=gate, gate_after=gate_after)
    return scripted_app(engine, start_conversation=cid)


async def _send_until_collapsed(pilot, app: BaizeApp) -> ChatScreen:  # type: ignore[no-untyped-def]
    screen = await ready(pilot, app)
    await settled(pilot)
    await pilot.press(*"go", "enter")
    await wait_until(pilot, lambda: bool(spacers(screen.transcript)),
                     what="the earlier messages collapsed")
    return screen


async def test_messages_far_above_stand_aside_while_a_reply_streams() -> None:
    """While a reply streams, earlier messages well above the view are hidden behind one
    spacer of their height (Textual walks every mounted widget on each layout); nothing
    visible moves, and they come back when the reply ends."""
    from baize_tui.ui.collapse import CollapsedSpace

    gate = threading.Event()
    app = _app_over_long_history(400, delay=0.002, gate=gate, gate_after=200)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _send_until_collapsed(pilot, app)
        transcript = screen.transcript
        old = views(screen)[:-2]  # before the new question and its reply
        assert len(old) == 40
        await settled(pilot)
        (spacer,) = spacers(transcript)
        hidden = [v for v in old if not v.display]
        assert len(hidden) >= 10 and hidden == old[:len(hidden)]  # a leading run
        kept = old[len(hidden)]
        # The first kept message sits where it did with everything shown.
        placed_at = kept.virtual_region.y
        reply = views(screen)[-1]
        reply_at = reply.virtual_region.y  # (the reply grows below its top meanwhile)
        collapser = screen._collapsers[0]
        collapser.hidden, saved = [], collapser.hidden
        for view in saved:
            view.display = True
        spacer.display = False
        await settled(pilot)
        assert kept.virtual_region.y == placed_at
        assert reply.virtual_region.y == reply_at
        for view in saved:
            view.display = False
        spacer.display = True
        collapser.hidden = saved
        gate.set()
        await wait_until(pilot, lambda: not screen.busy, what="the reply")
        await wait_until(pilot, lambda: not transcript.query(CollapsedSpace),
                         what="the collapsed messages back")
        assert not transcript.query(CollapsedSpace)  # the reply's own ones too
        assert all(v.display for v in views(screen))


async def test_scrolling_up_while_streaming_brings_the_earlier_messages_back() -> None:
    # Held mid-reply: the reply must still be streaming when the user scrolls up.
    app = _app_over_long_history(3000, delay=0.001, gate=threading.Event(), gate_after=300)
    async with app.run_test(size=SIZE) as pilot:
        screen = await _send_until_collapsed(pilot, app)
        transcript = screen.transcript
        transcript.scroll_home(animate=False)
        await wait_until(pilot, lambda: not spacers(transcript),
                         what="the earlier messages back")
        assert screen.busy and all(v.display for v in views(screen))
        first = views(screen)[0]
        assert first.region.y < transcript.region.bottom  # on screen, at the top
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy)


async def test_full_context_keeps_the_prompt_start_across_turns() -> None:
    """The screen makes a new ChatSession per turn; once old turns must go, the prompt's start
    must still stay put from turn to turn (else llama.cpp re-reads everything each turn)."""
    engine = ScriptedEngine(["A fine answer with several words in it. "] * 8, n_ctx=900)
    set_value("chat.max_new_tokens", 8)
    set_value("chat.system_prompt", "You are Baize.")
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        for i in range(18):
            screen.prompt_box.text = f"question {i} about something long enough"
            await pilot.press("enter")
            await wait_until(pilot, lambda: not screen.busy, what=f"turn {i}")
    prompts = engine.prompts
    dropped = [i for i in range(1, len(prompts)) if not prompts[i].startswith(prompts[i - 1])]
    assert len(dropped) >= 1, "the context never filled up"
    continued = [i for i in range(dropped[0] + 1, len(prompts)) if i not in dropped]
    assert len(continued) > len(dropped)  # most turns extend the previous prompt


async def test_a_conversation_deleted_elsewhere_is_reported_not_fatal() -> None:
    engine = ScriptedEngine(["hello"])
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot, app)
        await pilot.press(*"hi", "enter")
        await wait_until(pilot, lambda: not screen.busy and screen.conversation_id is not None)
        gone = screen.conversation_id
        with HistoryStore() as other_window:
            other_window.delete_conversation(gone)
        screen.sidebar.post_message(Sidebar.Open(gone))
        await settled(pilot)
        screen.conversation_action("rename", gone)
        await settled(pilot)
        assert app.is_running and app.screen is screen


async def test_redraws_slow_down_when_drawing_is_expensive_and_recover() -> None:
    """The stream's redraw rate follows the UI thread's CPU: when each write costs much more
    than the budget allows, writes come further apart (down to the slowest rate); when they
    are cheap again, back up to the fastest."""
    import time

    from baize_tui.ui import widgets

    engine = ScriptedEngine(["x"])
    app = scripted_app(engine)
    async with app.run_test(size=SIZE) as pilot:
        view = await _streaming_view(pilot, app)
        fastest, slowest = 1 / widgets.STREAM_FPS, 1 / widgets.STREAM_MIN_FPS
        assert view._interval == pytest.approx(fastest)

        def burn(seconds: float) -> None:  # UI-thread CPU spent between two writes
            end = time.thread_time() + seconds
            while time.thread_time() < end:
                pass

        for i in range(8):
            await view.feed(f"word {i} ")
            await view.flush()
            burn(0.2)
        await view.feed("last ")
        await view.flush()  # (now: on a loaded machine the burns take longer than they cost)
        assert view._interval == pytest.approx(slowest)  # 0.2 s of CPU a write: as slow as allowed
        assert view.next_write_in() is None  # nothing pending
        await view.feed("more ")
        wait = view.next_write_in()
        assert wait is not None and wait > fastest
        for i in range(12):
            await view.feed(f"cheap {i} ")
            await view.flush()
        assert view._interval < slowest / 2
        await view.finish_stream()
        await settled(pilot)
        assert "cheap 11" in view.text and not view.streaming
