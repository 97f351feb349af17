"""Issue 16: the app as a first-time user meets it, at 80x24 where size matters.

Focus and type-ahead, modals that fit and save with Ctrl+S, the one confirmation dialog,
F9's undo, one keymap with F1 per screen, live numbers while a reply streams, the branch
marker of an edit, editing an earlier message, the chat list collapsing, the models screen
at 80 columns, and reopening the last chat. The scripted engine (tests/ui_helpers.py) gives
predictable replies; the history is real SQLite.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hub_server import HubServer
from textual import events
from textual.widget import Widget
from textual.widgets import Button, DataTable, Input, ListView, ProgressBar, Static, TextArea
from ui_helpers import ScriptedEngine, ready, scripted_app, send, settled, wait_until

from baize_tui.history import HistoryStore
from baize_tui.paths import get_paths
from baize_tui.ui.app import BaizeApp
from baize_tui.ui.chat_screen import ChatScreen
from baize_tui.ui.dialogs import ConfirmDialog
from baize_tui.ui.models_screen import ModelsScreen
from baize_tui.ui.screens import FirstRunScreen, HelpScreen, SettingsScreen
from baize_tui.ui.selfchat_screen import SelfChatScreen
from baize_tui.ui.train_screen import TrainScreen
from baize_tui.ui.widgets import MessageView

SMALL = (80, 24)


def on_screen(widget: Widget, size: tuple[int, int] = SMALL) -> bool:
    """Whether the widget is drawn inside the terminal (and inside its scroll parents)."""
    region = widget.region
    visible = widget.screen.find_widget(widget).visible_region if widget.is_mounted else None
    return (region.height > 0 and region.y >= 0 and region.bottom <= size[1]
            and region.right <= size[0] and visible is not None and visible.height > 0)


def type_fast(app: BaizeApp, *keys: str) -> None:
    """Post keys to the app all at once, as a fast typist or a paste does: none waits for
    the one before it to be handled."""
    for key in keys:
        char = key if len(key) == 1 else None
        app.post_message(events.Key(key, char))


# --------------------------------------------------------------------------- focus and input


async def test_first_run_focuses_the_path_and_shows_errors_by_the_field(tmp_path: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SMALL, notifications=True) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        screen = app.screen
        field = screen.query_one("#gguf-path", Input)
        await wait_until(pilot, lambda: app.focused is field, what="the path field focused")
        missing = tmp_path / "nope.gguf"
        await pilot.press(*str(missing), "enter")  # no Tab needed
        assert field.value == str(missing)
        error = screen.query_one("#choice-file .choice-error", Static)
        await wait_until(pilot, lambda: "nope.gguf" in str(error.render()),
                         what="the error under the path field")
        await wait_until(pilot, lambda: on_screen(error), what="the error in view at 80x24")
        await wait_until(pilot, lambda: any("nope.gguf" in str(t.render())
                                            for t in app.screen.query("Toast")),
                         what="the error as a toast too")


async def test_typing_on_a_message_or_the_chat_list_goes_to_the_prompt() -> None:
    app = scripted_app(ScriptedEngine(["Hi", " there."]))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "hello")
        reply = screen.query(MessageView).last()
        reply.focus()
        await wait_until(pilot, lambda: app.focused is reply)
        await pilot.press("alt+left")  # a branch key: focus stays on the message
        type_fast(app, "w", "h", "y")
        await wait_until(pilot, lambda: screen.prompt_box.text == "why",
                         what="typed letters in the prompt box")
        assert app.focused is screen.prompt_box
        screen.prompt_box.text = ""
        conversations = screen.sidebar.query_one("#conversations", ListView)
        conversations.focus()
        await wait_until(pilot, lambda: app.focused is conversations)
        type_fast(app, "o", "k")
        await wait_until(pilot, lambda: screen.prompt_box.text == "ok")
        assert app.focused is screen.prompt_box
        screen.prompt_box.text = ""
        screen.set_focus(None)  # nothing focused (e.g. after a click on empty space)
        type_fast(app, "y", "o")
        await wait_until(pilot, lambda: screen.prompt_box.text == "yo")


async def test_keys_typed_right_after_tab_reach_the_next_field() -> None:
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(120, 40)) as pilot:
        await ready(pilot, app)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        modal = app.screen
        system = modal.query_one("#system-prompt", TextArea)
        before = system.text
        system.focus()
        await wait_until(pilot, lambda: app.focused is system)
        temperature = modal.query_one("#temperature", Input)
        temperature.value = ""
        type_fast(app, "tab", "0", ".", "2")
        await wait_until(pilot, lambda: temperature.value == "0.2",
                         what="the keys after Tab in the temperature field",
                         why=lambda: f"temperature={temperature.value!r}, "
                                     f"system ends {system.text[-10:]!r}")
        assert system.text == before


# --------------------------------------------------------------------------- 80x24 modals


async def test_settings_fit_80x24_save_with_ctrl_s_and_ask_before_discarding() -> None:
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        modal = app.screen
        await pilot.pause()
        for button in modal.query(Button).results():
            if button.id in ("save", "cancel"):
                assert on_screen(button), (button.id, button.region)
        for key in ("n_ctx", "seed"):  # reachable: scrolled into view when focused
            field = modal.query_one(f"#{key}", Input)
            field.focus()
            await wait_until(pilot, lambda field=field: on_screen(field),
                             what=f"{key} scrolled into view")
        # Esc on an edited form asks first; n keeps the edits
        seed = modal.query_one("#seed", Input)
        seed.value = "1234"
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is modal)
        assert seed.value == "1234"
        # a bad value: the error shows by the buttons and the field gets focus
        temperature = modal.query_one("#temperature", Input)
        temperature.value = "hot"
        await pilot.press("ctrl+s")
        error = modal.query_one(".form-error", Static)
        await wait_until(pilot, lambda: "hot" in str(error.render()))
        assert on_screen(error) and app.focused is temperature
        temperature.value = "0.3"
        await pilot.press("ctrl+s")  # saves from any field
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert screen.settings is not None
        assert screen.settings.params.seed == 1234
        assert screen.settings.params.temperature == 0.3
        # Esc with nothing edited closes at once; after an edit, y discards
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        app.screen.query_one("#seed", Input).value = "99"
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert screen.settings.params.seed == 1234


async def test_settings_model_field_lists_known_models(tiny_gguf: Path) -> None:
    app = scripted_app(ScriptedEngine(["x"]), reopen_last=False)
    with HistoryStore() as store:
        conv = store.create_conversation(system_prompt="", model=str(tiny_gguf), params={})
        store.add_message(conv, parent_id=None, role="user", text="old chat")
    async with app.run_test(size=SMALL) as pilot:
        await ready(pilot, app)
        await pilot.press("f2")
        await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
        from baize_tui.ui.pickers import ModelList

        picker = app.screen.query_one("#model-list", ModelList)
        specs = [str(picker.get_option_at_index(i).id) for i in range(picker.option_count)]
        assert str(tiny_gguf) in specs  # used by a past chat
        field = app.screen.query_one("#model", Input)
        field.value = "no such model"
        await wait_until(pilot, lambda: picker.option_count == 0)
        field.value = tiny_gguf.name[:6]
        await wait_until(pilot, lambda: picker.option_count == 1)
        picker.focus()
        picker.highlighted = 0
        await pilot.press("enter")
        await wait_until(pilot, lambda: field.value == str(tiny_gguf))


async def test_settings_model_picker_lists_the_endpoints_in_the_config() -> None:
    """[openai] models in config.toml, and what the configured endpoint lists at GET
    /models (a real HTTP server), are offered beside the models already used."""
    from openai_server import OpenAITestServer

    from baize_tui.config import set_value
    from baize_tui.ui.pickers import ModelList

    with OpenAITestServer(model="served-model") as server:
        set_value("openai.base_url", server.base_url)
        set_value("openai.models", ["configured-model"])
        app = scripted_app(ScriptedEngine(["x"]), reopen_last=False)
        async with app.run_test(size=SMALL) as pilot:
            await ready(pilot, app)
            await pilot.press("f2")
            await wait_until(pilot, lambda: isinstance(app.screen, SettingsScreen))
            picker = app.screen.query_one("#model-list", ModelList)

            def specs() -> list[str]:
                return [str(picker.get_option_at_index(i).id)
                        for i in range(picker.option_count)]

            assert "openai:configured-model" in specs()  # at once, from the config
            await wait_until(pilot, lambda: "openai:served-model" in specs(),
                             what="the endpoint's own list", why=lambda: str(specs()))
            assert any(r.path.endswith("/models") for r in server.requests)
            field = app.screen.query_one("#model", Input)
            field.value = "served"
            await wait_until(pilot, lambda: specs() == ["openai:served-model"])
            picker.focus()
            picker.highlighted = 0
            await pilot.press("enter")
            await wait_until(pilot, lambda: field.value == "openai:served-model")


async def test_sidebar_collapses_on_a_narrow_terminal() -> None:
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        assert not screen.sidebar.display
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: screen.sidebar.display)
        await pilot.press("ctrl+b")
        await wait_until(pilot, lambda: not screen.sidebar.display)
        await pilot.resize_terminal(81, 24)  # Ctrl+B's choice stands across a resize
        await pilot.pause()
        assert not screen.sidebar.display
        # Ctrl+F shows the list, and keys typed right after it land in the search box
        type_fast(app, "ctrl+f", "z", "e", "b")
        search = screen.sidebar.query_one("#search", Input)
        await wait_until(pilot, lambda: search.value == "zeb",
                         why=lambda: f"search={search.value!r} "
                                     f"prompt={screen.prompt_box.text!r}")
        assert screen.sidebar.display and screen.prompt_box.text == ""
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await ready(pilot, app)
        assert screen.sidebar.display


async def test_models_screen_at_80_columns_lists_the_opened_model(tiny_gguf: Path,
                                                                   tmp_path: Path) -> None:
    elsewhere = tmp_path / "opened" / "mine.gguf"
    elsewhere.parent.mkdir()
    shutil.copy(tiny_gguf, elsewhere)
    assert not str(elsewhere).startswith(str(get_paths().models_dir))
    app = BaizeApp(model=str(elsewhere),
                   engine_factory=lambda spec, config, n_ctx: ScriptedEngine(["x"]))
    async with app.run_test(size=SMALL) as pilot:
        await ready(pilot, app)
        await pilot.press("f8")
        await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
        screen = app.screen
        table = screen.query_one("#models", DataTable)
        await wait_until(pilot, lambda: table.row_count == 1, what="the opened model listed")
        assert screen.models[0].path == elsewhere and screen.models[0].source == "opened"
        status_x = sum(c.get_render_width(table) for c in list(table.columns.values())[:2])
        assert status_x + 10 < SMALL[0]  # the Status column starts well inside 80 columns
        assert str(table.get_row_at(0)[2]) == "ok"
        assert not screen.query_one("#pull-progress", ProgressBar).display  # idle: hidden


# --------------------------------------------------------------------------- destructive keys


async def test_one_confirmation_dialog_y_enter_n_escape() -> None:
    app = scripted_app(ScriptedEngine(["ok"]))
    async with app.run_test(size=(120, 30)) as pilot:
        screen = await ready(pilot, app)
        for n in range(3):
            await screen.open_conversation(None)
            await send(pilot, screen, f"chat {n}")
        history = app.history
        conversations = screen.sidebar.query_one("#conversations", ListView)

        async def delete_first(*answer: str) -> None:
            conversations.focus()
            conversations.index = 0
            await pilot.press("d")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.press(*answer)
            await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
            await pilot.pause()

        await delete_first("n")
        assert len(history.list_conversations()) == 3
        await delete_first("escape")
        assert len(history.list_conversations()) == 3
        await delete_first("y")
        await wait_until(pilot, lambda: len(history.list_conversations()) == 2)
        await delete_first("enter")
        await wait_until(pilot, lambda: len(history.list_conversations()) == 1)


async def test_f9_removes_the_last_turn_and_ctrl_z_puts_it_back() -> None:
    app = scripted_app(ScriptedEngine(["An", " answer."]))
    async with app.run_test(size=SMALL, notifications=True) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "first")
        await send(pilot, screen, "second")
        history = app.history
        conversation = screen.conversation_id
        assert conversation is not None
        before = [(m.role, m.text, m.finish_reason) for m in history.thread(conversation)]
        assert len(before) == 4
        await pilot.press("f9")
        await wait_until(pilot, lambda: len(history.thread(conversation)) == 2)
        assert len(list(screen.query(MessageView))) == 2
        await wait_until(pilot, lambda: any("Ctrl+Z" in str(t.render())
                                            for t in screen.query("Toast")),
                         what="the undo toast")
        toast = next(t for t in screen.query("Toast") if "Ctrl+Z" in str(t.render()))
        assert toast.region.bottom <= screen.prompt_box.region.y  # off the prompt box
        screen.prompt_box.focus()
        await pilot.press("ctrl+z")
        await wait_until(pilot, lambda: len(history.thread(conversation)) == 4)
        after = [(m.role, m.text, m.finish_reason) for m in history.thread(conversation)]
        assert after == before
        await wait_until(pilot, lambda: len(list(screen.query(MessageView))) == 4)
        # with nothing to undo, Ctrl+Z is the prompt box's own undo again
        assert not screen.check_action("undo_remove", ())


# --------------------------------------------------------------------------- one keymap


def test_same_key_same_meaning_across_screens() -> None:
    meanings: dict[str, set[str]] = {}
    from baize_tui.ui.sdf_screen import SdfScreen

    for screen in (ChatScreen, SelfChatScreen, TrainScreen, ModelsScreen, SettingsScreen,
                   SdfScreen):
        for binding in screen.BINDINGS:
            for key in binding.key.split(","):
                meanings.setdefault(key.strip(), set()).add(binding.description.split()[0])
    assert meanings["ctrl+s"] == {"Save"}
    assert meanings["ctrl+g"] == {"Start"}
    assert meanings["ctrl+r"] == {"Regenerate"}


async def test_f1_lists_the_keys_of_the_screen_you_are_on() -> None:
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=SMALL) as pilot:
        await ready(pilot, app)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        ids = {row[2] for row in app.screen.rows}
        assert {"chat.regenerate", "chat.export", "message.edit", "app.help"} <= ids
        assert "train.start" not in ids
        await pilot.press("escape")
        await pilot.press("f7")
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, HelpScreen))
        rows = {row[2]: row[0] for row in app.screen.rows}
        assert rows["train.start"] == "ctrl+g" and rows["train.preview"] == "ctrl+o"
        assert "chat.regenerate" not in rows


# --------------------------------------------------------------------------- live numbers


async def test_numbers_update_while_streaming_and_a_stop_reports_its_real_rate() -> None:
    delay = 0.05
    engine = ScriptedEngine([f"w{n} " for n in range(400)], delay=delay)
    app = scripted_app(engine)
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        status = screen.status
        status.ttft_s = 123.0  # a previous reply's figure must not show as this one's
        screen.prompt_box.text = "go"
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.busy and status.live_tokens == 0
                         or (status.live_tokens or 0) > 0, what="the reply started")
        assert status.ttft_s != 123.0
        await wait_until(pilot, lambda: (status.live_tokens or 0) >= 6, what="live tokens")
        seen = status.live_tokens
        assert screen.busy  # these numbers came while the reply was streaming
        await wait_until(pilot, lambda: (status.live_tokens or 0) > (seen or 0))
        assert status.tokens_per_s is not None and status.ttft_s is not None
        assert status.used_tokens is not None and status.used_tokens > (status.live_tokens or 0)
        await pilot.press("escape")
        await wait_until(pilot, lambda: not screen.busy, what="the stop")
        stats = screen.last_turn.stats
        assert stats.finish_reason == "cancelled"
        # each token took at least `delay` seconds: the rate cannot exceed 1/delay
        assert stats.tokens_per_s is not None and stats.tokens_per_s <= 1.0 / delay
        assert status.tokens_per_s == stats.tokens_per_s
        assert status.live_tokens == stats.completion_tokens


# --------------------------------------------------------------------------- branches and state


async def test_an_edit_shows_its_branch_marker_at_once() -> None:
    app = scripted_app(ScriptedEngine(["Reply."]))
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "first try")
        await pilot.press("ctrl+t")
        assert screen.prompt_box.text == "first try"
        screen.prompt_box.text = "second try"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.busy and screen.last_turn is not None
                         and screen.last_turn.text == "Reply."
                         and len(list(screen.query(MessageView))) == 2)
        user = screen.query(MessageView).first()
        await wait_until(pilot, lambda: user.info.branch == (2, 2),
                         what="the ‹ 2/2 › marker on the edited message")
        assert "2/2" in user._header().plain


async def test_edit_an_earlier_message_makes_a_branch_from_there() -> None:
    app = scripted_app(ScriptedEngine(["Reply."]))
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "one")
        await send(pilot, screen, "two")
        first = screen.query(MessageView).first()
        first.focus()
        await wait_until(pilot, lambda: app.focused is first)
        await pilot.press("e")
        await wait_until(pilot, lambda: screen.prompt_box.text == "one")
        assert app.focused is screen.prompt_box
        screen.prompt_box.text = "uno"
        await pilot.press("enter")
        await wait_until(pilot, lambda: not screen.busy
                         and [v.text for v in screen.query(MessageView)][:1] == ["uno"]
                         and len(list(screen.query(MessageView))) == 2)
        conversation = screen.conversation_id
        assert conversation is not None
        thread = app.history.thread(conversation)
        assert [m.text for m in thread][0] == "uno" and len(thread) == 2
        assert len(app.history.siblings(thread[0].id)) == 2  # "one" stays as a branch


async def test_the_last_chat_reopens_on_launch() -> None:
    app = scripted_app(ScriptedEngine(["Reply."]))
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        await send(pilot, screen, "remember me")
        conversation = screen.conversation_id
    app = scripted_app(ScriptedEngine(["Reply."]))
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        assert screen.conversation_id == conversation
        await wait_until(pilot, lambda: any(v.text == "remember me"
                                            for v in screen.query(MessageView)))
    app = scripted_app(ScriptedEngine(["Reply."]), reopen_last=False)
    async with app.run_test(size=SMALL) as pilot:
        screen = await ready(pilot, app)
        assert screen.conversation_id is None


async def test_selfchat_screen_reopens_the_interrupted_run_not_an_older_finished_one() -> None:
    import json
    import os
    import time

    from baize_tui.ui.selfchat_screen import latest_run_dir

    root = get_paths().selfchat_dir
    state = {"version": 1, "config": {"model": "m", "mode": "v2"}, "seeds": {"count": 10}}
    interrupted, finished = root / "run-interrupted", root / "run-finished"
    for run in (interrupted, finished):
        run.mkdir(parents=True)
        (run / "state.json").write_text(json.dumps(state))
    now = time.time()
    # the interrupted run started first, then wrote dialogues until it was killed; the
    # finished run started (and ended) in between
    os.utime(interrupted / "state.json", (now - 300, now - 300))
    os.utime(finished / "state.json", (now - 200, now - 200))
    (interrupted / "raw.jsonl").write_text("")
    os.utime(interrupted / "raw.jsonl", (now - 10, now - 10))
    assert latest_run_dir() == interrupted
    app = scripted_app(ScriptedEngine(["x"]))
    async with app.run_test(size=SMALL) as pilot:
        await ready(pilot, app)
        await pilot.press("f6")
        await wait_until(pilot, lambda: isinstance(app.screen, SelfChatScreen))
        field = app.screen.query_one("#sc-out", Input)
        await wait_until(pilot, lambda: field.value == str(interrupted))


def test_paths_complete_to_existing_files(tmp_path: Path) -> None:
    from baize_tui.ui.pickers import complete_path, filter_models

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "baize-7b.Q4.gguf").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    assert complete_path(str(tmp_path / "mo")) == str(tmp_path / "models") + "/"
    assert complete_path(str(tmp_path / "models" / "b")) == str(
        tmp_path / "models" / "baize-7b.Q4.gguf")
    assert complete_path(str(tmp_path / "zzz")) is None
    assert complete_path("openai:gpt") is None
    specs = ["/m/baize-7b.gguf", "openai:llama3", "/m/other.gguf"]
    assert filter_models(specs, "BAIZE 7b") == ["/m/baize-7b.gguf"]
    assert filter_models(specs, "") == specs


async def test_first_run_path_field_completes_as_you_type(tiny_gguf: Path) -> None:
    app = BaizeApp()
    async with app.run_test(size=SMALL) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        field = app.screen.query_one("#gguf-path", Input)
        await wait_until(pilot, lambda: app.focused is field)
        partial = str(tiny_gguf)[:-4]
        await pilot.press(*partial)
        for _ in range(100):  # the completion is computed in the background
            await pilot.press("right")  # at the end of the field: takes the completion
            if field.value == str(tiny_gguf):
                break
            await pilot.pause(0.05)  # poll: no event says the background completion has arrived
        assert field.value == str(tiny_gguf)


async def test_every_status_line_field_fits_at_80_and_100_columns() -> None:
    """The status line at 80x24 (no chat list) and 100x30 (the chat list takes 31 columns):
    every field is still there, shortened by importance, none cut off at the edge."""
    for size in (SMALL, (100, 30)):
        app = scripted_app(ScriptedEngine(["x"]), reopen_last=False)
        async with app.run_test(size=size) as pilot:
            screen = await ready(pilot, app)
            status = screen.status
            status.model_label = "baize-v2-7b-Q4_K_M.gguf"
            status.lora = "sft-adapter.gguf"
            status.chat_format = "template (auto)"
            status.n_ctx, status.used_tokens = 4096, 1234
            status.live_tokens, status.tokens_per_s, status.ttft_s = 321, 45.3, 0.42
            for state, stalled, dropped in (("generating…", 12.0, 0), ("", None, 2)):
                status.state, status.stalled_s, status.dropped_turns = state, stalled, dropped
                await settled(pilot)
                line = status.render_line(0).text.strip()
                assert status.region.right <= size[0]
                assert not line.endswith("…"), (size, line)  # not cut at the edge
                # what matters most is always there (TTFT was cut off at 100 columns) ...
                wanted = ["baize-v2", "LoRA", "1234/4096", "45", "TTFT 0.4"]
                wanted += ["silent 12s"] if state else ["321", "⚠", "2 turn"]
                # ... and with no chat list beside it, the chat format too
                wanted += ["templ"] if size == SMALL and not state else []
                for piece in wanted:
                    assert piece in line, (size, piece, line)


def test_status_line_never_overflows_and_drops_the_least_important_first() -> None:
    """At any width the line fits; fields are shortened before any is left out, and what is
    left out goes least important first (the meter's bar, the format, the token count)."""
    from types import SimpleNamespace

    from baize_tui.ui.status_line import fit, status_fields

    bar = SimpleNamespace(state="generating…", spinner=0, model_label="baize-v2-7b-Q4_K_M.gguf",
                          chat_format="template (auto)", n_ctx=4096, used_tokens=1234,
                          live_tokens=321, tokens_per_s=45.3, ttft_s=0.42, stalled_s=None,
                          dropped_turns=0)
    full = fit(status_fields(bar, "sft.gguf"), 500).plain  # type: ignore[arg-type]
    assert "format template (auto)" in full and "TTFT 0.42s" in full and "█" in full
    for width in range(10, 130):
        line = fit(status_fields(bar, "sft.gguf"), width).plain  # type: ignore[arg-type]
        assert len(line) <= width, (width, line)
        if "templ" in line:  # the format outranks the meter's bar: the bar went first
            assert "TTFT" in line and "1234/4096" in line, (width, line)
        if width >= 60:
            assert "TTFT 0.4" in line and "1234/4096" in line and "baize" in line, (width, line)


async def test_ctrl_q_asks_first_during_a_real_download(hub: HubServer, tiny_gguf: Path) -> None:
    """A real download from the local hub (tests/hub_server.py), throttled until the test
    lets it finish: Ctrl+Q asks first while it runs, n keeps it going, and once it is done
    Ctrl+Q quits at once."""
    repo_dir = hub.add_repo("someone/tiny-GGUF", files={"README.md": b"# tiny\n"})
    shutil.copy(tiny_gguf, repo_dir / "tiny-llama-Q4_K_M.gguf")
    release = hub.throttle("someone/tiny-GGUF/tiny-llama-Q4_K_M.gguf")
    app = scripted_app(ScriptedEngine(["x"]), reopen_last=False)
    try:
        async with app.run_test(size=SMALL) as pilot:
            await ready(pilot, app)
            await pilot.press("f8")
            await wait_until(pilot, lambda: isinstance(app.screen, ModelsScreen))
            models = app.screen
            assert isinstance(models, ModelsScreen)
            models.query_one("#repo", Input).value = "someone/tiny-GGUF"
            models.action_get()
            bar = models.query_one("#pull-progress", ProgressBar)
            await wait_until(pilot, lambda: (bar.progress or 0) > 0, timeout=30,
                             what="bytes arriving")
            await pilot.press("ctrl+q")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            question = app.screen.question
            assert "download" in question and "resumed" in question
            await pilot.press("n")
            await wait_until(pilot, lambda: app.screen is models)
            assert app.is_running and app.active_work() != []
            assert (bar.progress or 0) < (bar.total or 0)  # still downloading
            release.set()
            await wait_until(pilot, lambda: app.active_work() == [], timeout=60,
                             what="the download to finish")
            assert (get_paths().models_dir / "tiny-llama-Q4_K_M.gguf").exists()
            await pilot.press("ctrl+q")  # nothing running: quits at once
            await wait_until(pilot, lambda: not app.is_running, what="the app to exit")
    finally:
        release.set()


async def test_ctrl_q_asks_first_while_a_download_runs() -> None:
    import asyncio

    app = BaizeApp()
    async with app.run_test(size=SMALL) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        release = asyncio.Event()
        # stands in for the first-run download (the same worker group)
        app.screen.run_worker(release.wait(), group="download")
        await wait_until(pilot, lambda: app.active_work() != [])
        await pilot.press("ctrl+q")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert "download" in app.screen.question and "resumed" in app.screen.question
        await pilot.press("n")
        await wait_until(pilot, lambda: isinstance(app.screen, FirstRunScreen))
        assert app.is_running
        release.set()
        await wait_until(pilot, lambda: app.active_work() == [])
        await pilot.press("ctrl+q")  # nothing running: quits at once
        await wait_until(pilot, lambda: not app.is_running, what="the app to exit")


def test_a_stopped_reply_reports_its_real_rate() -> None:
    """Tokens that show no text (a stop string being matched, part of a character) and the
    time up to the stop count: the rate is never faster than the tokens came."""
    import time as _time

    from baize_tui.engines.base import Generation, TurnStats

    delay = 0.02
    stats = TurnStats()

    def pieces():  # type: ignore[no-untyped-def]
        for n in range(1, 31):
            _time.sleep(delay)
            stats.completion_tokens = n
            # text only for tokens 10-14; the rest are held back
            yield "x" if 10 <= n <= 14 else ""
        stats.finish_reason = "cancelled"

    gen = Generation(pieces(), stats)
    for _ in gen:
        pass
    gen.close()
    assert stats.completion_tokens == 30 and stats.tokens_per_s is not None
    assert stats.tokens_per_s <= 1.0 / delay * 1.001  # each token took at least `delay`


def test_live_stats_clear_the_last_reply_and_show_a_stall() -> None:
    from types import SimpleNamespace

    from baize_tui.ui.live_stats import STALL_S, LiveStats

    now = [100.0]
    status = SimpleNamespace(ttft_s=0.5, tokens_per_s=80.0, live_tokens=64, stalled_s=None,
                             used_tokens=300)
    live = LiveStats(status, clock=lambda: now[0])
    live.start(prompt_tokens=40)
    assert (status.ttft_s, status.tokens_per_s, status.live_tokens) == (None, None, 0)
    assert status.used_tokens == 40
    now[0] += 1.0
    live.update(11, live.elapsed(), ttft_s=0.5)  # 10 tokens in the 0.5 s after the first
    assert status.live_tokens == 11 and status.used_tokens == 51
    assert status.tokens_per_s == 20.0 and status.ttft_s == 0.5
    now[0] += STALL_S + 1  # the model goes quiet: the rate falls and the line says so
    live.update(11, live.elapsed(), ttft_s=0.5)
    assert status.stalled_s is not None and status.stalled_s >= STALL_S
    assert status.tokens_per_s < 20.0
    live.finish(12, 19.0, 0.5, prompt_tokens=40)
    assert (status.live_tokens, status.tokens_per_s, status.stalled_s) == (12, 19.0, None)


def test_undo_restores_a_turn_with_its_branches() -> None:
    from baize_tui.ui.turn_undo import TurnUndo

    with HistoryStore() as store:
        conv = store.create_conversation(system_prompt="s", model="m", params={})
        first = store.add_message(conv, parent_id=None, role="user", text="hi")
        store.add_message(conv, parent_id=first, role="assistant", text="hello")
        user = store.add_message(conv, parent_id=store.thread(conv)[-1].id, role="user",
                                 text="again")
        one = store.add_message(conv, parent_id=user, role="assistant", text="reply one")
        store.update_message(one, finish_reason="stop", completion_tokens=3, tokens_per_s=9.5)
        two = store.add_message(conv, parent_id=user, role="assistant", text="reply two")
        store.update_message(two, finish_reason="cancelled", completion_tokens=2)
        store.select_branch(one)
        shown = [m.text for m in store.thread(conv)]
        undo = TurnUndo()
        undo.remove(store, conv, user)
        assert [m.text for m in store.thread(conv)] == ["hi", "hello"]
        assert undo.restore(store) == conv
        assert [m.text for m in store.thread(conv)] == shown  # the same branch shown
        restored_user = store.thread(conv)[2]
        replies = store.children(restored_user.id)
        assert [(m.text, m.finish_reason, m.completion_tokens) for m in replies] == [
            ("reply one", "stop", 3), ("reply two", "cancelled", 2)]
        assert replies[0].tokens_per_s == 9.5
        assert undo.restore(store) is None  # once
