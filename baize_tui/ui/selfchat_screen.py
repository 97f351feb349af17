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
"""

from __future__ import annotations

import asyncio
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
from textual.worker import Worker, WorkerState

from baize_tui.errors import OperationFailed, UserError
from baize_tui.formatting import fmt_eta
from baize_tui.paths import get_paths
from baize_tui.ui.pickers import PathInput
from baize_tui.ui.selfchat_batch import BatchMixin, batch_panel_lines

PRESETS = ("quora", "stackoverflow", "medquad")
SAMPLE_SEED = "How do I make a good cup of tea?"
_ERRORS = (UserError, OperationFailed, OSError)

def error_text(exc: BaseException) -> str:
    """The message to show for ``exc``: a user-facing error's own words, else its type too."""
    return str(exc) if isinstance(exc, _ERRORS) else f"{type(exc).__name__}: {exc}"





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


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


class SelfChatScreen(BatchMixin, Screen[None]):
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

    @property
    def running(self) -> bool:
        """Whether a run is going (its worker has not finished)."""
        return self.worker is not None and self.worker.state in (WorkerState.PENDING,
                                                                 WorkerState.RUNNING)

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

    @staticmethod
    def _saved_state(out: Path) -> dict[str, Any] | None:
        """The run directory's state.json, if it already holds a run."""
        import json

        try:
            return json.loads((out / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @work(thread=True, exclusive=True, group="selfchat-prepare", exit_on_error=False)
    def _prepare(self, source: str, seed_options: dict[str, Any], out: Path, run_config: Any,
                 api_key: str) -> None:
        from baize_tui.selfchat.run import open_run
        from baize_tui.selfchat.seeds import load_seeds

        try:
            seeds = load_seeds(source, **seed_options)
            if not seeds:
                raise UserError(f"{source}: no seeds (after dropping empty lines and duplicates)")
            store = open_run(out, run_config, seeds, seeds_info={"source": source, **seed_options})
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._prepare_failed, error_text(exc))
            return
        self.app.call_from_thread(self._launch, run_config, seeds, store, api_key)

    def _prepare_failed(self, message: str) -> None:
        self.query_one("#sc-start", Button).disabled = False
        self._message(message, True)

    def _launch(self, run_config: Any, seeds: list[Any], store: Any, api_key: str) -> None:
        from baize_tui.selfchat.runner import SelfChatRunner

        for warning in store.warnings:
            self._events.append(_Note("notice", warning))
        if self._via() == "batch":
            self._launch_batch(run_config, seeds, store, api_key)
            return
        from baize_tui.selfchat.batch_ops import open_job_count

        if open_job_count(store.dir):
            store.close()
            self._prepare_failed(f"{store.dir} has open batch jobs: choose \"Batch API\" to "
                                 "collect them (a live run would pay for them twice)")
            return
        self.run_dir = Path(store.dir)
        self.runner = SelfChatRunner(run_config, seeds, store, api_key=api_key,
                                     on_event=self._events.append)
        self.rates = deque(maxlen=120)
        self._final_message = ""
        self.query_one("#sc-out", Input).disabled = True
        self._message(f"Running: {len(self.runner.todo)} dialogue(s) to generate into {store.dir}")
        # An app-level worker: it lives as long as the app, whichever screen is showing.
        self.worker = self.app.run_worker(self._drive(self.runner, store), name="selfchat",
                                          group="selfchat", exit_on_error=False)
        self._buttons()

    async def _drive(self, runner: Any, store: Any) -> None:
        from baize_tui.selfchat.runner import FatalRunError

        message, error = "", False
        try:
            stats = await runner.run()
            reason = stats.stop_reason or "finished"
            message = ("Finished." if reason == "finished" else
                       f"Stopped ({reason}); start again with the same settings to resume.")
        except FatalRunError as exc:
            message, error = str(exc), True
        except asyncio.CancelledError:
            message = "Interrupted; start again with the same settings to resume."
            raise
        except Exception as exc:  # the run must never take the app down
            message, error = f"the run failed: {type(exc).__name__}: {exc}", True
        finally:
            store.close()
            self._final_message = message
            if self.is_attached:
                self._finished(message, error)

    def _finished(self, message: str, error: bool) -> None:
        self._tick()
        self._message(message, error)
        self.query_one("#sc-out", Input).disabled = False
        self._buttons(running=False)

    def _buttons(self, running: bool | None = None) -> None:
        running = self.running if running is None else running
        self.query_one("#sc-start", Button).disabled = running
        pause = self.query_one("#sc-pause", Button)
        pause.disabled = not running or self.batch_mode
        pause.label = "Resume" if running and self.runner is not None and self.runner.paused \
            else "Pause"
        self.query_one("#sc-stop", Button).disabled = not running

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

    async def stop_gracefully(self, timeout: float = 10.0) -> None:
        """Stop the run and wait (up to ``timeout`` s) for in-flight dialogues to be saved.

        The app calls this before exiting; the run directory then resumes where it stopped.
        Past the timeout the worker is cancelled: unsaved in-flight dialogues are redone on resume.
        """
        worker, runner = self.worker, self.runner
        if worker is None or runner is None or not self.running:
            return
        runner.stop("app exit")
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(worker.wait())), timeout)
        except asyncio.TimeoutError:
            worker.cancel()
        except Exception:  # WorkerFailed / WorkerCancelled: it is over either way
            pass

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

    @work(thread=True, exclusive=True, group="selfchat-export", exit_on_error=False)
    def _export(self, run_dir: Path, fmt: str, target: Path) -> None:
        from baize_tui.selfchat.export import export_run

        try:
            result = export_run(run_dir, fmt, target)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._message, error_text(exc), True)
            return
        skipped = f" ({result.skipped} without a kept turn)" if result.skipped else ""
        self.app.call_from_thread(self._message,
                                  f"Exported {result.written} dialogue(s) to {result.path}{skipped}")

    # ------------------------------------------------------------------ drawing

    def _message(self, text: str, error: bool = False) -> None:
        self.query_one("#sc-message", Static).update(Text(text, style="red" if error else ""))
        if error:
            self.notify(text, severity="error", markup=False)

    def _tick(self) -> None:
        events = self._events[:]  # the runner holds self._events.append: empty it in place
        del self._events[:len(events)]
        if events:
            self._show_events(events)
        runner = self.runner
        if runner is not None and self.running and not self.batch_mode:
            now = time.monotonic()
            if now - self._last_rate_sample >= 1.0:
                self._last_rate_sample = now
                self.rates.append(runner.stats.per_minute())
                self.query_one("#sc-rate", Sparkline).data = list(self.rates)
            self._buttons()
        self._draw_counters()

    def _show_events(self, events: list[Any]) -> None:
        dialogues = self.query_one("#sc-dialogues", RichLog)
        failures = self.query_one("#sc-failures", RichLog)
        for event in events:
            record = event.record or {}
            if event.kind == "done":
                text = Text()
                text.append(_clip(record.get("seed", ""), 200) + "\n", style="bold")
                for human, ai in (record.get("turns") or [])[:6]:
                    text.append("Human: ", style="cyan")
                    text.append(_clip(human, 300) + "\n")
                    text.append("AI: ", style="green")
                    text.append(_clip(ai, 300) + "\n")
                dialogues.write(text)
            elif event.kind == "failed":
                text = Text()
                text.append(f"{record.get('reason', 'failed')}: ", style="bold red")
                text.append(_clip(record.get("seed", ""), 80) + " — ", style="dim")
                text.append(_clip(event.message, 300))
                failures.write(text)
            elif event.kind in ("error", "notice", "pause", "stop"):
                style = {"error": "bold red", "notice": "yellow"}.get(event.kind, "dim")
                text = Text(f"{event.kind}: ", style=style)
                text.append(_clip(event.message, 400))
                failures.write(text)

    def _draw_counters(self) -> None:
        counters = self.query_one("#sc-counters", Static)
        runner = self.runner
        if self.batch_mode:
            self._draw_batch(counters)
            return
        self.query_one("#sc-batch", Static).update(
            Text("\n".join(batch_panel_lines((self.summary or {}).get("batch")))))
        if runner is not None:
            s = runner.stats
            done = s.previously_done + s.done
            cost = "unknown" if s.cost is None else f"${s.cost:.4f}"
            lines = [
                f"done {done}/{s.total}   failed {s.failed}   rejected {s.rejected}   "
                f"in flight {s.in_flight}   retries {s.retries}",
                f"{s.per_minute():.1f} dialogues/min   tokens {s.tokens:,}   cost {cost}   "
                f"ETA {fmt_eta(s.eta()) if self.running else '-'}",
            ]
            pause = s.paused_until - time.monotonic()
            if self.running and runner.paused:
                lines.append("paused by you")
            elif self.running and pause > 0.5:
                lines.append(f"rate limited: every worker waits {pause:.0f}s")
            if s.reasons:
                lines.append("reasons: " + ", ".join(f"{k} {v}" for k, v in s.reasons.most_common()))
            counters.update(Text("\n".join(lines)))
            return
        info = self.summary
        if info is None:
            counters.update(Text("No run yet: fill in the form and press Start."))
            return
        cost = "unknown" if info.get("cost") is None else f"${info['cost']:.4f}"
        seeds = "?" if info.get("seeds") is None else info["seeds"]
        lines = [
            f"done {info['done']}/{seeds}   failed {info['failed']}   "
            f"rejected {info['rejected']}   remaining "
            f"{'?' if info.get('remaining') is None else info['remaining']}",
            f"tokens {info['tokens_in'] + info['tokens_out']:,}   cost {cost}   "
            f"model {info.get('model', '')} ({info.get('mode', '')})",
        ]
        if info.get("reasons"):
            lines.append("reasons: " + ", ".join(f"{k} {v}" for k, v in info["reasons"].items()))
        lines.append("Start continues this run where it stopped.")
        counters.update(Text("\n".join(lines)))


class _Note:
    """A runner-style event made by the screen itself (store warnings)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        self.record = None
