"""The self-chat screen: generate Baize-style dialogues from seed questions, and watch them land.

A thin shell over :mod:`baize_tui.selfchat` (the twin of ``baize-tui selfchat run|status|
export``). The form holds the run's options and previews the prompt template filled with a
sample seed; *Start* loads the seeds and opens the run directory in a thread, then runs a
:class:`~baize_tui.selfchat.runner.SelfChatRunner` on the app's event loop in an **app-level**
worker, so the run keeps going while the user is on another screen. The runner's events are
buffered and a timer redraws the counters, the dialogues-per-minute sparkline, the latest
finished dialogues and the failures twice a second. Pause holds new requests; Stop lets the
dialogues in flight finish and be saved. :meth:`SelfChatScreen.stop_gracefully` is what the app
calls on exit: the run directory is resumable by starting again with the same settings.

Opening the screen (or typing a run directory) re-attaches to a run on disk: its settings fill
the form and ``summarize()`` gives the counts. Model output is shown as plain ``Text`` only.

This module holds the form, the preview and the key/button handlers; launching, driving,
stopping and drawing a live run are in :mod:`baize_tui.ui.selfchat_live`, the Batch API half in
:mod:`baize_tui.ui.selfchat_batch` (``error_text`` is re-exported from here).
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import (
    Button,
    Footer,
    Input,
    Label,
    RichLog,
    Select,
    Sparkline,
    Static,
)
from textual.worker import Worker

from baize_tui.errors import UserError
from baize_tui.paths import get_paths
from baize_tui.ui.pickers import PathInput
from baize_tui.ui.selfchat_live import _ERRORS, SelfChatLiveMixin, error_text

PRESETS = ("quora", "stackoverflow", "medquad")
SAMPLE_SEED = "How do I make a good cup of tea?"


def latest_run_dir() -> Path | None:
    """The most recently updated self-chat run under the default directory, if any."""
    root = get_paths().selfchat_dir
    if not root.is_dir():
        return None
    runs = [p for p in root.iterdir() if (p / "state.json").is_file()]
    return max(runs, key=last_activity) if runs else None


#: Files a run writes while it works (an export written later is not run activity).
_RUN_FILES = ("state.json", "raw.jsonl", "failed.jsonl", "events.log")


def last_activity(run_dir: Path) -> float:
    """When a run last did something: the newest of its own files. An interrupted run wrote
    its dialogues after its ``state.json``; judging by that file alone, an older finished run
    could look newer."""
    times = []
    for name in _RUN_FILES:
        try:
            times.append((run_dir / name).stat().st_mtime)
        except OSError:
            continue
    return max(times, default=0.0)


class SelfChatScreen(SelfChatLiveMixin, Screen[None]):
    """Self-chat data generation: options, template preview, live run, export."""

    HELP_TITLE = "Self-chat"

    DEFAULT_CSS = """
    SelfChatScreen { layout: vertical; }
    SelfChatScreen .title { text-style: bold; padding: 0 1; }
    SelfChatScreen #sc-body { height: 1fr; }
    SelfChatScreen #sc-form {
        width: 45%;
        min-width: 36;
        max-width: 56;
        height: 1fr;
        padding: 0 1;
        border-right: vkey $primary;
    }
    SelfChatScreen #sc-form Label { margin-top: 1; color: $text-muted; }
    SelfChatScreen #sc-form Horizontal { height: auto; }
    SelfChatScreen #sc-form Horizontal > Vertical { height: auto; width: 1fr; }
    SelfChatScreen #sc-preview {
        height: auto;
        max-height: 12;
        border: round $secondary;
        padding: 0 1;
        margin-top: 1;
    }
    SelfChatScreen #sc-run { width: 1fr; height: 1fr; padding: 0 1; }
    SelfChatScreen .buttons { height: auto; }
    SelfChatScreen .buttons Button { margin-right: 1; min-width: 10; }
    SelfChatScreen #sc-counters { height: auto; margin-top: 1; }
    SelfChatScreen #sc-batch { height: auto; max-height: 10; color: $text-muted; }
    SelfChatScreen #sc-rate { height: 2; margin-bottom: 1; }
    SelfChatScreen .plot-label { color: $text-muted; margin-top: 1; }
    SelfChatScreen .buttons Label { padding: 0 1 0 0; }
    SelfChatScreen #sc-message { height: auto; }
    SelfChatScreen #sc-dialogues { height: 2fr; border: round $primary; }
    SelfChatScreen #sc-failures { height: 1fr; border: round $error; }
    SelfChatScreen #sc-export-format { width: 22; }
    """

    BINDINGS = [
        Binding("ctrl+g", "start", "Start", id="selfchat.start"),
        Binding("ctrl+x", "stop", "Stop", id="selfchat.stop"),
        Binding("ctrl+s", "export", "Save data as", id="selfchat.export"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.runner: Any | None = None  # SelfChatRunner while a run is going
        self.worker: Worker[Any] | None = None
        self.run_dir: Path | None = None
        self.summary: dict[str, Any] | None = None  # of the run directory, when not running
        self.rates: deque[float] = deque(maxlen=120)
        self._events: list[Any] = []
        self._sample_seed = SAMPLE_SEED
        self._final_message = ""
        self._last_rate_sample = 0.0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("Self-chat data generation", classes="title")
        with Horizontal(id="sc-body"):
            with VerticalScroll(id="sc-form"):
                yield Label("Seeds: a file or quora/stackoverflow/medquad")
                yield PathInput(placeholder="seeds.txt", id="sc-seeds")
                yield Label("Run directory (same one resumes)")
                yield PathInput(id="sc-out")
                yield Label("Model")
                yield Input("gpt-3.5-turbo", id="sc-model", compact=True)
                yield Label("Base URL (blank: config or OpenAI)")
                yield Input(placeholder="http://127.0.0.1:8080/v1", id="sc-base-url", compact=True)
                with Horizontal():
                    with Vertical():
                        yield Label("Mode")
                        yield Select([("v1: one call", "v1"), ("v2: per turn", "v2")],
                                     value="v1", allow_blank=False, id="sc-mode", compact=True)
                    with Vertical():
                        yield Label("Max turns (v2)")
                        yield Input("3", type="integer", id="sc-max-turns", compact=True)
                yield Label("Send as")
                yield Select([("live requests", "live"), ("Batch API: half price, <= 24 h a step",
                                                          "batch")],
                             value="live", allow_blank=False, id="sc-via", compact=True)
                with Horizontal():
                    with Vertical():
                        yield Label("Concurrency")
                        yield Input("8", type="integer", id="sc-concurrency", compact=True)
                    with Vertical():
                        yield Label("Seed limit")
                        yield Input(type="integer", placeholder="all", id="sc-limit",
                                    compact=True)
                with Horizontal():
                    with Vertical():
                        yield Label("Requests/min")
                        yield Input(type="number", placeholder="no cap", id="sc-rpm",
                                    compact=True)
                    with Vertical():
                        yield Label("Max tokens total")
                        yield Input(type="integer", placeholder="no cap",
                                    id="sc-max-tokens-total", compact=True)
                yield Label("Max cost (USD)")
                yield Input(type="number", placeholder="no cap", id="sc-max-cost", compact=True)
                yield Label("Template file with {seed} (blank: Baize's)")
                yield PathInput(placeholder="built-in", id="sc-template")
                preview = Static("", id="sc-preview", markup=False)
                preview.border_title = "Prompt for a sample seed"
                yield preview
            with Vertical(id="sc-run"):
                with Horizontal(classes="buttons"):
                    yield Button("Start", id="sc-start", variant="success", compact=True)
                    yield Button("Pause", id="sc-pause", disabled=True, compact=True)
                    yield Button("Stop", id="sc-stop", variant="error", disabled=True,
                                 compact=True)
                with Horizontal(classes="buttons"):
                    yield Label("Export as")
                    yield Select([("baize JSON", "baize"), ("messages JSONL", "messages")],
                                 value="baize", allow_blank=False, id="sc-export-format",
                                 compact=True)
                    yield Button("Export", id="sc-export", compact=True)
                yield Static("", id="sc-counters", markup=False)
                yield Static("", id="sc-batch", markup=False)
                yield Static("dialogues per minute", classes="plot-label", markup=False)
                yield Sparkline([], id="sc-rate")
                yield Static("", id="sc-message", markup=False)
                dialogues = RichLog(id="sc-dialogues", wrap=True, markup=False, max_lines=400)
                dialogues.border_title = "Latest dialogues"
                yield dialogues
                failures = RichLog(id="sc-failures", wrap=True, markup=False, max_lines=400)
                failures.border_title = "Failures"
                yield failures
        yield Footer()

    def on_mount(self) -> None:
        latest = latest_run_dir()
        out = latest or get_paths().selfchat_dir / time.strftime("run-%Y%m%d-%H%M%S")
        self.query_one("#sc-out", Input).value = str(out)  # Input.Changed loads its summary
        self._update_preview()
        self.set_interval(0.5, self._tick)
        self._draw_counters()

    # ------------------------------------------------------------------ form

    def _value(self, key: str) -> str:
        return self.query_one(f"#sc-{key}", Input).value.strip()

    def _number(self, key: str, label: str, cast: type, *, minimum: float | None = None) -> Any:
        raw = self._value(key)
        if not raw:
            return None
        try:
            value = cast(raw)
        except ValueError:
            raise UserError(f"{label}: {raw!r} is not a number") from None
        if minimum is not None and value < minimum:
            raise UserError(f"{label} must be at least {minimum:g}")
        return value

    def _mode(self) -> str:
        value = self.query_one("#sc-mode", Select).value
        return value if isinstance(value, str) else "v1"

    def _template(self) -> Any:
        from baize_tui.selfchat.templates import load_template

        return load_template(self._value("template") or None)

    @on(Input.Changed, "#sc-seeds")
    def _seeds_changed(self) -> None:
        self._read_sample(self._value("seeds"))

    @work(thread=True, exclusive=True, group="selfchat-sample", exit_on_error=False)
    def _read_sample(self, source: str) -> None:
        from baize_tui.selfchat.seeds import read_seed_texts

        seed = SAMPLE_SEED
        if source and source not in PRESETS and Path(source).expanduser().is_file():
            try:
                seed = next((t.strip() for t in read_seed_texts(source) if t.strip()), SAMPLE_SEED)
            except _ERRORS:
                seed = SAMPLE_SEED
        self.app.call_from_thread(self._set_sample, source, seed)

    def _set_sample(self, source: str, seed: str) -> None:
        if source != self._value("seeds"):
            return  # typed on since: a newer read is coming
        self._sample_seed = seed
        self._update_preview()

    @on(Select.Changed, "#sc-mode")
    @on(Input.Changed, "#sc-template")
    def _update_preview(self) -> None:
        from baize_tui.selfchat import templates as tpl

        preview = self.query_one("#sc-preview", Static)
        try:
            template = self._template()
        except UserError as exc:
            preview.update(Text(str(exc), style="red"))
            return
        if self._mode() == "v2":
            text = tpl.v2_human_prompt(template, self._sample_seed, [])
        else:
            text = template.render(self._sample_seed)
        preview.update(Text(text))

    @on(Input.Changed, "#sc-out")
    def _out_changed(self) -> None:
        if self.running:
            return
        out = self._value("out")
        self.run_dir = Path(out).expanduser() if out else None
        self._load_summary(out)

    @work(thread=True, exclusive=True, group="selfchat-summary", exit_on_error=False)
    def _load_summary(self, out: str) -> None:
        from baize_tui.selfchat.run import summarize
        from baize_tui.selfchat.store import RunStore

        path = Path(out).expanduser() if out else None
        if path is None or not (path / "state.json").exists() and not (path / "raw.jsonl").exists():
            self.app.call_from_thread(self._set_summary, out, None, None)
            return
        try:
            info = summarize(path)
            state = RunStore(path, create=False, readonly=True)
            try:
                saved = state.read_state() or {}
            finally:
                state.close()
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._message, f"{path}: {error_text(exc)}", True)
            return
        self.app.call_from_thread(self._set_summary, out, info, saved)

    def _set_summary(self, out: str, info: dict[str, Any] | None,
                     state: dict[str, Any] | None) -> None:
        if self.running or out != self._value("out"):
            return  # a run started, or the directory changed again while this was read
        self.summary = info
        if state:  # re-attach: the form shows the run's settings
            config = state.get("config") or {}
            seeds = state.get("seeds") or {}
            if config.get("model"):
                self.query_one("#sc-model", Input).value = str(config["model"])
            if config.get("base_url"):
                self.query_one("#sc-base-url", Input).value = str(config["base_url"])
            if config.get("mode") in ("v1", "v2"):
                self.query_one("#sc-mode", Select).value = config["mode"]
            for key in ("max_turns", "concurrency"):
                if config.get(key):
                    self.query_one(f"#sc-{key.replace('_', '-')}", Input).value = str(config[key])
            source = config.get("template_source") or ""
            if source and not source.startswith("builtin"):
                self.query_one("#sc-template", Input).value = source
            if seeds.get("source") and not self._value("seeds"):
                self.query_one("#sc-seeds", Input).value = str(seeds["source"])
            if seeds.get("limit"):
                self.query_one("#sc-limit", Input).value = str(seeds["limit"])
            if info and info.get("batch"):
                self.query_one("#sc-via", Select).value = "batch"
        self._draw_counters()

    # ------------------------------------------------------------------ running

    @on(Button.Pressed, "#sc-start")
    def action_start(self) -> None:
        """Validate the form, then load the seeds and open the run directory in a thread."""
        from baize_tui.config import load_config
        from baize_tui.selfchat.run import price_for, resolve_api_key, resolve_base_url
        from baize_tui.selfchat.runner import RunConfig

        if self.running:
            return
        try:
            seeds = self._value("seeds")
            if not seeds:
                raise UserError("Seeds: give a seed file or a preset name")
            out = self._value("out")
            if not out:
                raise UserError("Run directory: give a directory for the run's files")
            model = self._value("model")
            if not model:
                raise UserError("Model: give the model name the API expects")
            config = load_config()
            base_url = resolve_base_url(self._value("base-url") or None, config)
            api_key = resolve_api_key(base_url, config)
            max_cost = self._number("max-cost", "Max cost", float, minimum=0.0)
            run_config = RunConfig(
                model=model, base_url=base_url, mode=self._mode(),
                max_turns=self._number("max-turns", "Max turns", int, minimum=1) or 3,
                template=self._template(),
                concurrency=self._number("concurrency", "Concurrency", int, minimum=1) or 8,
                rpm=self._number("rpm", "Requests/min", float, minimum=0.001),
                max_tokens_total=self._number("max-tokens-total", "Max tokens total", int,
                                              minimum=1),
                max_cost=max_cost, price=price_for(model, config),
            )
            if self._via() == "batch":
                from baize_tui.selfchat.batch_ops import batch_discount, batch_price

                run_config.price = batch_price(run_config.price, batch_discount(config))
            limit = self._number("limit", "Seed limit", int, minimum=1)
        except UserError as exc:
            self._message(str(exc), True)
            return
        seed_options = {"limit": limit}
        saved = self._saved_state(Path(out).expanduser())
        if saved is not None:
            # Continuing a run (perhaps one started on the command line): settings the form
            # does not show come from the run itself, so it resumes instead of refusing or
            # silently reading a different seed set.
            old_config = saved.get("config") or {}
            for key in ("temperature", "max_tokens", "min_turns", "tpm"):
                if key in old_config:
                    setattr(run_config, key, old_config[key])
            old_seeds = saved.get("seeds") or {}
            if old_seeds.get("source") == seeds:
                for key in ("field", "shuffle", "shard"):
                    if old_seeds.get(key) is not None:
                        seed_options[key] = old_seeds[key]
                if limit is None:
                    seed_options["limit"] = old_seeds.get("limit")
        self._message("Loading seeds…")
        self.query_one("#sc-start", Button).disabled = True
        self._prepare(seeds, seed_options, Path(out).expanduser(), run_config, api_key)

    @on(Button.Pressed, "#sc-pause")
    def action_pause(self) -> None:
        """Hold new requests (in-flight ones finish), or carry on."""
        if not self.running or self.runner is None:
            return
        if self.runner.paused:
            self.runner.resume()
            self._message("Resumed.")
        else:
            self.runner.pause()
            self._message("Paused: no new requests until you resume.")
        self._buttons()

    @on(Button.Pressed, "#sc-stop")
    def action_stop(self) -> None:
        """Start no new dialogue; those in flight finish and are saved."""
        if not self.running or self.runner is None:
            return
        self.runner.stop("stopped")
        if self.batch_mode:
            self._message("Stopping: the jobs keep running at the provider; Start collects them.")
            return
        self._message(f"Stopping: finishing {self.runner.stats.in_flight} dialogue(s) in flight…")

    # ------------------------------------------------------------------ export

    @on(Button.Pressed, "#sc-export")
    @work(group="selfchat-export-ask", exclusive=True)
    async def action_export(self) -> None:
        """Write the finished dialogues (Baize JSON or chat-messages JSONL) to a file the
        user chooses (the run directory's ``export-…`` file is offered)."""
        from baize_tui.ui.screens import PromptScreen

        out = self._value("out")
        if not out:
            self._message("Run directory: nothing to export", True)
            return
        fmt = self.query_one("#sc-export-format", Select).value
        fmt = fmt if isinstance(fmt, str) else "baize"
        run_dir = Path(out).expanduser()
        default = run_dir / ("export-baize.json" if fmt == "baize" else "export-messages.jsonl")
        answer = await self.app.push_screen_wait(PromptScreen(
            f"Save the dialogues ({fmt}) to:", str(default), ok_label="Save",
            complete_paths=True))
        if answer:
            self._export(run_dir, fmt, Path(answer).expanduser())
