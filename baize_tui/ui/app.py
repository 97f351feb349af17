"""The baize-tui Textual application: modes, the model, themes, keys and the command palette.

Modes: ``chat`` (the default), ``selfchat``, ``train`` and ``models``; F5-F8 or the command
palette switch between them. The model is loaded in a thread worker (the UI keeps drawing,
the status line spins) and shared by every chat; a chat whose settings name another model or
context size reloads it. Keys are :class:`~textual.binding.Binding`\\ s with ids, so
``[ui.keymap]`` in config.toml can remap any of them; the theme choice is saved to
``ui.theme``.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from textual import events, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.reactive import reactive
from textual.screen import Screen

from baize_tui.config import load_config, set_value
from baize_tui.engines.base import Engine
from baize_tui.errors import UserError
from baize_tui.history import HistoryStore
from baize_tui.paths import get_paths
from baize_tui.ui.chat_screen import ChatScreen
from baize_tui.ui.gc_pacing import pacer as gc_pacer
from baize_tui.ui.keys import (
    COMMON_ROWS,
    FOCUS_BINDINGS,
    binding_rows,
    screen_key_sources,
    typeahead_redirect,
)
from baize_tui.ui.screens import FirstRunScreen, HelpScreen
from baize_tui.ui.textual_compat import current_keymap, screen_stack

log = logging.getLogger("baize_tui.ui")

#: ``(spec, config, n_ctx)``; called with ``lora=PATH`` as well when a chat has an adapter
EngineFactory = Callable[..., Engine]
#: what a loaded engine is: model spec, context size, LoRA adapter
EngineKey = tuple[str, "int | None", "str | None"]


def open_engine_factory(spec: str, config: dict[str, Any], n_ctx: int | None, *,
                        lora: str | None = None) -> Engine:
    """The default way to load a model: :func:`baize_tui.engines.open_engine` (the same path
    as ``ask``, LoRA adapter included)."""
    from baize_tui.engines import open_engine

    return open_engine(spec, config=config, n_ctx=n_ctx, lora=lora)


def _mode_screen(module: str, name: str) -> Callable[[], Screen[Any]]:
    """A mode's screen factory: ``baize_tui.ui.<module>.<name>``, imported when the mode is
    first opened, so start-up never pays for the self-chat, training or models screens."""

    def make() -> Screen[Any]:
        return getattr(importlib.import_module(f"baize_tui.ui.{module}"), name)()

    return make


def model_label(spec: str) -> str:
    """A short name for a model spec, for the status line."""
    if not spec:
        return "no model"
    kind, sep, rest = spec.partition(":")
    if sep and kind in ("openai", "hf"):
        return spec
    return Path(spec).name


class BaizeApp(App[None]):
    """The terminal app: chat with a local Baize model, with history.

    ``model`` overrides ``model.default``; ``history`` and ``engine_factory`` let tests and
    benchmarks supply their own store and engine loader; ``start_conversation`` opens a
    saved conversation at start-up (else the last one, unless ``reopen_last`` is false).
    """

    TITLE = "baize-tui"
    CSS_PATH = str(Path(__file__).with_name("baize.tcss"))
    MODES = {
        "chat": ChatScreen,
        "selfchat": _mode_screen("selfchat_screen", "SelfChatScreen"),
        "train": _mode_screen("train_screen", "TrainScreen"),
        "models": _mode_screen("models_screen", "ModelsScreen"),
        "sdf": _mode_screen("sdf_screen", "SdfScreen"),
    }
    DEFAULT_MODE = "chat"
    BINDINGS = [
        *FOCUS_BINDINGS,
        Binding("f1", "help", "Help", id="app.help"),
        Binding("f5", "switch_mode('chat')", "Chat", show=False, priority=True,
                id="app.mode_chat"),
        Binding("f6", "switch_mode('selfchat')", "Self-chat", show=False, priority=True,
                id="app.mode_selfchat"),
        Binding("f7", "switch_mode('train')", "Training", show=False, priority=True,
                id="app.mode_train"),
        Binding("f8", "switch_mode('models')", "Models", show=False, priority=True,
                id="app.mode_models"),
        Binding("f10", "switch_mode('sdf')", "SDF", show=False, priority=True,
                id="app.mode_sdf"),
    ]

    model_state: reactive[str] = reactive("none", init=False)

    def __init__(
        self,
        *,
        model: str | None = None,
        config: dict[str, Any] | None = None,
        history: HistoryStore | None = None,
        engine_factory: EngineFactory | None = None,
        start_conversation: int | None = None,
        reopen_last: bool | None = None,
    ) -> None:
        self.config = config if config is not None else load_config()
        super().__init__()
        self.history = history if history is not None else HistoryStore()
        self._own_history = history is None
        self.engine_factory: EngineFactory = engine_factory or open_engine_factory
        self.model_spec: str = model or str(self.config.get("model", {}).get("default") or "")
        self.model_error = ""
        self.engine: Engine | None = None
        self._engine_key: EngineKey | None = None
        self._loading_key: EngineKey | None = None
        #: the LoRA adapter of the loaded (or loading) model, for the status line
        self.model_lora: str | None = None
        self.start_conversation = start_conversation
        #: open the last chat on launch (``ui.reopen_last``) when no chat is named
        self.reopen_last = bool(self.config.get("ui", {}).get("reopen_last", True)
                                if reopen_last is None else reopen_last)
        self._persist_theme = False
        #: set at the end of unmount (the SIGTERM path waits for it before ending the process)
        self.unmounted = threading.Event()
        #: generations running in threads: (cancel event, future of the thread)
        self.running_turns: set[tuple[threading.Event, asyncio.Future[None]]] = set()

    # ------------------------------------------------------------------ start / stop

    def on_mount(self) -> None:
        ui = self.config.get("ui", {})
        theme = ui.get("theme")
        if theme and theme in self.available_themes:
            self.theme = theme
        keymap = ui.get("keymap") or {}
        if isinstance(keymap, dict) and keymap:
            self.set_keymap({str(k): str(v) for k, v in keymap.items()})
        self._persist_theme = True
        # Once started, move everything alive (imports, the app's own objects) out of the
        # garbage collector's view: a full collection then scans only what came later. With
        # Textual's many small objects a full collection otherwise stalls a streaming frame
        # by 0.1-0.2 s every second or so.
        self.call_after_refresh(gc.freeze)
        if not self.model_spec:
            self.push_screen(FirstRunScreen(get_paths().config_file), self._first_run_done)

    async def on_event(self, event: events.Event) -> None:
        # Route a printable key typed where it means nothing (a message, the chat list) to
        # the prompt box: decided here, before the key is handed to a widget, so the keys
        # that follow it go there too, in order.
        if isinstance(event, events.Key) and not event.is_forwarded:
            try:
                target = typeahead_redirect(self.screen, event)
            except Exception:  # routing must never lose a key
                log.debug("type-ahead routing failed", exc_info=True)
                target = None
            if target is not None:
                self.screen.set_focus(target)
        await super().on_event(event)

    def watch_theme(self, theme: str) -> None:
        if self._persist_theme and self.config.get("ui", {}).get("theme") != theme:
            try:
                self.config = set_value("ui.theme", theme)
            except (OSError, UserError) as exc:
                log.warning("could not save the theme: %s", exc)

    async def _first_run_done(self, spec: str | None) -> None:
        if spec:
            self.config = load_config()
            self.model_spec = spec
            screen = self.get_screen_for_mode("chat")
            if isinstance(screen, ChatScreen) and screen.settings is not None:
                from dataclasses import replace

                screen.settings = replace(screen.settings, model=spec)
            self.ensure_model(spec, None)

    def default_model_changed(self, spec: str) -> None:
        """A new default model (chosen on the models screen): new chats use it; an open
        conversation keeps the model it was started with."""
        self.config = load_config()
        self.model_spec = spec
        screen = self.get_screen_for_mode("chat")
        if isinstance(screen, ChatScreen) and screen.conversation_id is None \
                and screen.settings is not None:
            from dataclasses import replace

            # an adapter was made for the old model
            screen.settings = replace(screen.settings, model=spec, lora=None)
            self.ensure_model(spec, screen.settings.n_ctx)

    def get_screen_for_mode(self, mode: str) -> Screen[Any] | None:
        """The base screen of a mode, if it has been created."""
        stack = screen_stack(self, mode)
        return stack[0] if stack else None

    def active_work(self) -> list[str]:
        """What quitting would interrupt: a self-chat run, a download."""
        found = []
        if getattr(self.get_screen_for_mode("selfchat"), "running", False):
            found.append("a self-chat run (it is resumable: the next start picks it up)")
        models = self.get_screen_for_mode("models")
        if getattr(models, "_busy", False):
            found.append("a model download (the partial file is kept and resumed next time)")
        if any(w.group == "download" and w.is_running for w in self.workers):
            found.append("a model download (the partial file is kept and resumed next time)")
        return found

    async def action_quit(self) -> None:
        """Quit; asks first while a self-chat run or a download is going. A self-chat run is
        stopped gracefully (its dialogues in flight are saved, the rest resume next time).
        Workers are cancelled once the app's message loop ends, so this must happen before
        exit, not on unmount."""
        self._quit_when_sure()

    @work(group="quit-confirm", exclusive=True)
    async def _quit_when_sure(self) -> None:
        busy = self.active_work()
        if busy:
            from baize_tui.ui.dialogs import ConfirmDialog

            if isinstance(self.screen, ConfirmDialog):
                return
            sure = await self.push_screen_wait(ConfirmDialog(
                "Quit now? This stops " + " and ".join(busy) + ".", "Quit", danger=False))
            if not sure:
                return
        screen = self.get_screen_for_mode("selfchat")
        if getattr(screen, "running", False):
            self.notify("Stopping self-chat: saving the dialogues in flight…")
            self.run_worker(self._quit_after_selfchat(screen), group="quit", exclusive=True)
            return
        self.exit()

    async def _quit_after_selfchat(self, screen: Any) -> None:
        await screen.stop_gracefully(timeout=10)
        self.exit()

    async def on_unmount(self) -> None:
        # A reply still being generated is stopped and saved (as cancelled) before the
        # engine and the history close under it.
        running = list(self.running_turns)
        for cancel, _ in running:
            cancel.set()
        if running:
            await asyncio.wait([future for _, future in running], timeout=10)
        engine, self.engine = self.engine, None
        if engine is not None:
            try:
                engine.close()
            except Exception:  # closing must never mask the real exit
                log.exception("closing the engine failed")
        if self._own_history:
            self.history.close()
        gc_pacer.reset()
        gc.unfreeze()
        self.unmounted.set()

    # ------------------------------------------------------------------ the model

    @property
    def model_label(self) -> str:
        """The loaded (or loading) model's short name."""
        return model_label(self.model_spec)

    def ensure_model(self, spec: str, n_ctx: int | None, lora: str | None = None) -> None:
        """Load ``spec`` (with context ``n_ctx`` and the GGUF LoRA adapter ``lora``) unless
        it is already loaded or loading."""
        if not spec:
            return
        key: EngineKey = (spec, n_ctx, lora or None)
        if key == self._engine_key and self.engine is not None:
            return
        if key == self._loading_key:
            return
        self.model_spec = spec
        self.model_lora = lora or None
        self.model_error = ""
        self._loading_key = key
        self.model_state = "loading"
        self._load(key)

    def _load(self, key: EngineKey) -> None:
        self.run_worker(lambda: self._load_thread(key), thread=True,
                        group="engine", exit_on_error=False)

    def _load_thread(self, key: EngineKey) -> None:
        spec, n_ctx, lora = key
        try:
            if lora:
                engine = self.engine_factory(spec, self.config, n_ctx, lora=lora)
            else:  # factories given by tests and benchmarks take three arguments
                engine = self.engine_factory(spec, self.config, n_ctx)
        except Exception as exc:
            if isinstance(exc, UserError):
                message = str(exc)
            else:
                log.exception("loading %s failed", spec)
                message = f"{type(exc).__name__}: {exc}"
            try:
                self.call_from_thread(self._model_failed, key, message)
            except RuntimeError:
                pass
            return
        try:
            self.call_from_thread(self._model_loaded, key, engine)
        except RuntimeError:  # the app closed meanwhile
            engine.close()

    def _model_loaded(self, key: EngineKey, engine: Engine) -> None:
        if key != self._loading_key:  # superseded by another load
            engine.close()
            return
        old, self.engine = self.engine, engine
        self._engine_key, self._loading_key = key, None
        if old is not None:
            old.close()
        self.model_state = "ready"
        self.refresh(repaint=True)

    def _model_failed(self, key: EngineKey, message: str) -> None:
        if key != self._loading_key:
            return
        self._loading_key = None
        self.model_error = message
        self.model_state = "error"
        self.notify(message, title="Model not loaded", severity="error", timeout=10)

    # ------------------------------------------------------------------ actions

    def copy_text(self, text: str, what: str = "text") -> None:
        """Copy to the clipboard (OSC 52) and say so; a failure is a notification."""
        try:
            self.copy_to_clipboard(text)
        except Exception as exc:
            self.notify(f"Could not copy: {exc}", severity="error")
            return
        lines = text.count("\n") + 1
        self.notify(f"Copied {what} ({lines} line{'s' if lines != 1 else ''}) to the clipboard.",
                    timeout=2)

    def key_rows(self, screen: Screen[Any] | None = None) -> list[tuple[str, str, str]]:
        """(keys, description, binding id) of the keys of ``screen`` (the one shown, by
        default) and the app's own, keymap applied."""
        screen = screen if screen is not None else self.screen
        rows = list(getattr(screen, "HELP_ROWS", []))
        sources = [*screen_key_sources(screen), ("", self.BINDINGS)]
        rows += binding_rows(sources, current_keymap(self))
        return rows + COMMON_ROWS

    def action_help(self) -> None:
        """Show every key."""
        if isinstance(self.screen, HelpScreen):
            return
        title = getattr(self.screen, "HELP_TITLE", "") or type(self.screen).__name__
        self.push_screen(HelpScreen(self.key_rows(), title=title))

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Help: keys", "Every key and its id for [ui.keymap]", self.action_help)
        for mode, title in (("chat", "Chat"), ("selfchat", "Self-chat"),
                            ("train", "Training"), ("models", "Models"), ("sdf", "SDF")):
            yield SystemCommand(f"Go to {title}", f"Switch to the {title.lower()} screen",
                                lambda mode=mode: self.switch_mode(mode))
        if isinstance(screen, ChatScreen):
            for title, help_text, callback in screen.palette_commands():
                yield SystemCommand(title, help_text, callback)


def _exit_after_unmount(app: BaizeApp, code: int) -> None:
    """After SIGTERM/SIGHUP: once the app has unmounted (replies saved, terminal about to be
    restored), end the process even if a generation thread is stuck in a stalled read, which
    asyncio's shutdown would otherwise wait for."""
    from baize_tui.stream_saver import flush_all

    app.unmounted.wait(timeout=60)
    time.sleep(1.0)  # grace for Textual to restore the terminal and return normally
    flush_all(timeout=2.0)
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os._exit(code)


def run(model: str | None = None) -> int:
    """Run the app until the user quits (on ``model`` when given, without saving it as the
    default); returns the exit status.

    (``baize-tui`` has already sent logging to the log file; nothing is printed over the UI.)
    """
    from baize_tui.faults import Terminated
    from baize_tui.shutdown import install_termination_handlers

    app = BaizeApp(model=model)

    def on_signal(signum: int) -> None:  # replies were flushed; leave through Textual
        loop = getattr(app, "_loop", None)
        if loop is None or not loop.is_running():
            raise Terminated(signum)
        loop.call_soon_threadsafe(app.exit, None, 128 + signum)
        threading.Thread(target=_exit_after_unmount, args=(app, 128 + signum), daemon=True,
                         name="exit-after-signal").start()

    install_termination_handlers(on_signal)
    app.run()
    code = int(app.return_code or 0)
    if code > 128:  # SIGTERM/SIGHUP: the terminal is restored and every reply saved; a
        # generation thread stuck in a stalled read must not hold the exit (atexit joins it)
        from baize_tui.stream_saver import flush_all

        flush_all(timeout=2.0)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return int(app.return_code or 0)
