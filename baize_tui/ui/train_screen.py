"""The training screen: set up a LoRA fine-tuning run, check what it trains on, then watch it.

A thin shell over :mod:`baize_tui.train` (the twin of ``baize-tui train run|preview|status|
stop|resume``). The form builds a :class:`~baize_tui.train.settings.TrainConfig` from a preset
("Baize 7B on one A100" and friends) plus the key hyperparameters; *Preview* renders one
dialogue with the trained tokens highlighted; *Start* validates, reads the data and launches the
trainer in its own process (``start_run``, in a thread worker).

The run view only reads the run directory's files (``status.json``, ``metrics.jsonl``,
``train.log``) once a second, so closing the TUI never touches the run, and opening the screen
again re-attaches to it (``list_runs()``; a live run is preferred, else the newest). Stop asks for
a checkpoint and an exit, Kill stops at once (the last periodic checkpoint stays), Resume continues
from the last checkpoint, and *Convert to GGUF* merges the finished adapter with baize-convert
into the models directory. Log and file text is shown as plain text only.

This module holds the form, the preview and the key/button handlers; launching, converting and
watching a run are in :mod:`baize_tui.ui.train_run_view` (``error_text`` is re-exported here).
"""

from __future__ import annotations

import time
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
    Log,
    ProgressBar,
    Select,
    Sparkline,
    Static,
)
from textual.widgets.select import InvalidSelectValueError

from baize_tui.errors import UserError
from baize_tui.paths import get_paths
from baize_tui.ui.pickers import PathInput
from baize_tui.ui.train_run_view import _ERRORS, TrainRunMixin, error_text

PRESET_LABELS: dict[str, str] = {
    "baize": "Baize (v1 settings, AI-turn loss)",
    "baize-exact": "Baize v1 exactly (loss on all text)",
    "baize-7b-a100": "Baize 7B on one A100",
    "baize-13b-a100": "Baize 13B on one A100",
    "a100-bf16": "A100 bf16, all linear layers, r 16",
    "qlora-4bit": "QLoRA 4-bit (CUDA)",
}
# "Batches" choices: padded to the longest (default), padding-free packing, length-grouped.
BATCHING: list[tuple[str, str]] = [("padded", "padded"), ("packed, padding-free", "packing"),
                                   ("grouped by length", "grouped")]
# form input id -> (TrainConfig field, type, label)
_NUMBERS: tuple[tuple[str, str, type, str], ...] = (
    ("max-steps", "max_steps", int, "Max steps"),
    ("epochs", "num_epochs", float, "Epochs"),
    ("batch-size", "batch_size", int, "Batch size"),
    ("micro-batch-size", "micro_batch_size", int, "Micro batch"),
    ("cutoff-len", "cutoff_len", int, "Cutoff length"),
    ("lr", "learning_rate", float, "Learning rate"),
    ("lora-r", "lora_r", int, "LoRA r"),
    ("lora-alpha", "lora_alpha", int, "LoRA alpha"),
    ("eval-steps", "eval_steps", int, "Eval/save every"),
    ("gpus", "num_gpus", int, "GPUs"),
)


def preview_text(preview: Any) -> Text:
    """A :class:`~baize_tui.train.data.Preview` as Text: trained pieces highlighted."""
    text = Text()
    for piece, trained in preview.pieces:
        text.append(piece, style="bold black on green" if trained else "dim")
    return text


class TrainScreen(TrainRunMixin, Screen[None]):
    """LoRA fine-tuning: the form, the sample preview, and the live view of a run."""

    HELP_TITLE = "Training"

    DEFAULT_CSS = """
    TrainScreen { layout: vertical; }
    TrainScreen .title { text-style: bold; padding: 0 1; }
    TrainScreen #tr-body { height: 1fr; }
    TrainScreen #tr-form {
        width: 45%;
        min-width: 36;
        max-width: 60;
        height: 1fr;
        padding: 0 1;
        border-right: vkey $primary;
    }
    TrainScreen #tr-form Label { margin-top: 1; color: $text-muted; }
    TrainScreen #tr-form Horizontal { height: auto; }
    TrainScreen #tr-form Horizontal > Vertical { height: auto; width: 1fr; }
    TrainScreen .buttons { height: auto; margin-top: 1; }
    TrainScreen .buttons Button { margin-right: 1; min-width: 10; }
    TrainScreen #tr-preview-scroll {
        height: auto;
        max-height: 20;
        border: round $secondary;
        padding: 0 1;
        margin-top: 1;
    }
    TrainScreen #tr-preview { height: auto; }
    TrainScreen #tr-run { width: 1fr; height: 1fr; padding: 0 1; }
    TrainScreen #tr-runs { width: 1fr; }
    TrainScreen #tr-status { height: auto; margin-top: 1; }
    TrainScreen .plot-label { color: $text-muted; }
    TrainScreen #tr-loss, TrainScreen #tr-eval { height: 3; }
    TrainScreen #tr-message { height: auto; }
    TrainScreen #tr-log { height: 1fr; border: round $primary; }
    TrainScreen #tr-quant { width: 12; }
    TrainScreen .buttons Label { padding: 0 1 0 0; }
    """

    BINDINGS = [
        Binding("ctrl+g", "start", "Start", id="train.start"),
        Binding("ctrl+o", "preview", "Preview", id="train.preview"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.run: Any | None = None  # baize_tui.train.runs.Run being watched
        self.status: dict[str, Any] = {}
        self.alive = False  # whether the watched run's trainer process is running
        self.losses: list[float] = []
        self.eval_losses: list[float] = []
        self.last_train: dict[str, Any] = {}
        self._metrics_tail: Any | None = None
        self._log_tail: Any | None = None
        self._busy = False  # a start/resume/convert is under way
        self._run_options: list[str] = []
        self.run_labels: dict[str, str] = {}
        self._preset_applied = ""

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("Fine-tuning (LoRA)", classes="title")
        with Horizontal(id="tr-body"):
            with VerticalScroll(id="tr-form"):
                with Horizontal(classes="buttons"):
                    yield Button("Preview sample", id="tr-preview-btn", compact=True)
                    yield Button("Start run", id="tr-start", variant="success", compact=True)
                yield Label("Base model (LLaMA checkpoint dir or hub id)")
                yield PathInput(placeholder="path/to/llama-7b", id="tr-base")
                yield Label("Start from a frozen LoRA (SDF: the SFT adapter; optional)")
                yield PathInput(placeholder="runs/baize-7b/adapter", id="tr-init-adapter")
                yield Label("Data files (comma-separated)")
                yield Input(placeholder="alpaca_chat_data.json, export-baize.json",
                            id="tr-data", compact=True)
                yield Label("Run directory")
                yield PathInput(str(get_paths().runs_dir / time.strftime("run-%Y%m%d-%H%M%S")),
                                id="tr-out")
                yield Label("Preset")
                yield Select([(label, key) for key, label in PRESET_LABELS.items()],
                             value="baize", allow_blank=False, id="tr-preset", compact=True)
                pairs = [_NUMBERS[i:i + 2] for i in range(0, len(_NUMBERS), 2)]
                for pair in pairs:
                    with Horizontal():
                        for key, _field, kind, label in pair:
                            with Vertical():
                                yield Label(label + (" (-1: epochs)" if key == "max-steps" else
                                                     " (0: all)" if key == "gpus" else ""))
                                yield Input(type="integer" if kind is int else "number",
                                            id=f"tr-{key}", compact=True)
                with Horizontal():
                    with Vertical():
                        yield Label("Loss on")
                        yield Select([("AI turns (v1.5/v2)", "ai"), ("all text (v1)", "all")],
                                     value="ai", allow_blank=False, id="tr-loss-mode", compact=True)
                    with Vertical():
                        yield Label("Format")
                        yield Select([("chat", "chat"), ("release", "release"), ("base", "base")],
                                     value="chat",
                                     allow_blank=False, id="tr-template", compact=True)
                with Horizontal():
                    with Vertical():
                        yield Label("Quantization")
                        yield Select([("none (bf16/fp16)", ""), ("8-bit", "8bit"),
                                      ("4-bit QLoRA", "4bit")], value="", allow_blank=False,
                                     id="tr-load-in", compact=True)
                    with Vertical():
                        yield Label("Batches")
                        yield Select(BATCHING, value="padded", allow_blank=False,
                                     id="tr-batching", compact=True)
                preview = Static("Preview shows one dialogue with the trained tokens "
                                 "highlighted.", id="tr-preview", markup=False)
                # The sample scrolls (it is often longer than the 20 lines it gets).
                scroll = VerticalScroll(preview, id="tr-preview-scroll")
                scroll.border_title = "Sample (scrolls)"
                yield scroll
            with Vertical(id="tr-run"):
                with Horizontal(classes="buttons"):
                    yield Select([], prompt="runs", id="tr-runs", compact=True)
                    yield Button("Refresh", id="tr-refresh", compact=True)
                with Horizontal(classes="buttons"):
                    yield Button("Stop", id="tr-stop", variant="warning", disabled=True,
                                 compact=True)
                    yield Button("Kill", id="tr-kill", variant="error", disabled=True,
                                 compact=True)
                    yield Button("Resume", id="tr-resume", disabled=True, compact=True)
                with Horizontal(classes="buttons"):
                    yield Button("Convert to GGUF", id="tr-convert", variant="primary",
                                 disabled=True, compact=True)
                    yield Label("quant")
                    yield Input("q4_k_m", id="tr-quant", compact=True)
                yield Static("No run: fill in the form and press Start.", id="tr-status",
                             markup=False)
                yield Static("loss", id="tr-loss-label", classes="plot-label", markup=False)
                yield Sparkline([], id="tr-loss")
                yield Static("eval loss", id="tr-eval-label", classes="plot-label", markup=False)
                yield Sparkline([], id="tr-eval")
                yield ProgressBar(id="tr-convert-progress", show_eta=False)
                yield Static("", id="tr-message", markup=False)
                log = Log(id="tr-log", max_lines=2000)
                log.border_title = "train.log"
                yield log
        yield Footer()

    def on_mount(self) -> None:
        self._apply_preset("baize")
        self.query_one("#tr-convert-progress", ProgressBar).display = False
        self.refresh_runs(attach=True)
        self.set_interval(1.0, self.poll)

    # ------------------------------------------------------------------ form

    def _apply_preset(self, name: str) -> None:
        from baize_tui.train.settings import preset

        config = preset(name)
        self._preset_applied = name
        for key, field, _kind, _label in _NUMBERS:
            value = getattr(config, field)
            self.query_one(f"#tr-{key}", Input).value = f"{value:g}" if isinstance(value, float) \
                else str(value)
        self.query_one("#tr-loss-mode", Select).value = config.loss
        self.query_one("#tr-load-in", Select).value = config.load_in
        self.query_one("#tr-template", Select).value = config.template
        self.query_one("#tr-batching", Select).value = (
            "packing" if config.packing else "grouped" if config.group_by_length else "padded")

    @on(Select.Changed, "#tr-preset")
    def _preset_changed(self, event: Select.Changed) -> None:
        # (The Changed event of the preset set at start-up comes late: it must not undo a
        # run's settings put in the form meanwhile.)
        if isinstance(event.value, str) and event.value != self._preset_applied:
            self._apply_preset(event.value)

    def _value(self, key: str) -> str:
        return self.query_one(f"#tr-{key}", Input).value.strip()

    def read_config(self) -> Any:
        """The :class:`TrainConfig` the form describes (``UserError`` naming a bad field)."""
        from baize_tui.train.settings import preset

        name = self.query_one("#tr-preset", Select).value
        config = preset(name if isinstance(name, str) else "baize")
        config.base = self._value("base")
        config.init_adapter = self._value("init-adapter")
        config.data = [p.strip() for p in self._value("data").split(",") if p.strip()]
        values: dict[str, Any] = {}
        for key, field, kind, label in _NUMBERS:
            raw = self._value(key)
            if not raw:
                continue
            try:
                values[field] = kind(raw)
            except ValueError:
                raise UserError(f"{label}: {raw!r} is not a valid number") from None
        if "eval_steps" in values:
            values["save_steps"] = values["eval_steps"]
        for key, field in (("loss-mode", "loss"), ("load-in", "load_in"),
                           ("template", "template")):
            value = self.query_one(f"#tr-{key}", Select).value
            if isinstance(value, str):
                values[field] = value
        batching = self.query_one("#tr-batching", Select).value
        values["packing"] = batching == "packing"
        values["group_by_length"] = batching == "grouped"
        config.update(values, source="the form")
        config.validate()
        return config

    # ------------------------------------------------------------------ preview

    @on(Button.Pressed, "#tr-preview-btn")
    def action_preview(self) -> None:
        """Render one dialogue with its trained tokens highlighted (tokenizer loaded in a thread)."""
        try:
            config = self.read_config()
        except UserError as exc:
            self._message(str(exc), True)
            return
        self.query_one("#tr-preview", Static).update(Text("Loading the tokenizer and data…"))
        self._preview(config)

    @work(thread=True, exclusive=True, group="train-preview", exit_on_error=False)
    def _preview(self, config: Any) -> None:
        from baize_tui.train.base_template import resolve_template
        from baize_tui.train.data import load_dialogues, load_tokenizer, preview_dialogue

        try:
            data = load_dialogues(config.data)
            if not data.dialogues:
                raise UserError("no dialogues in the data files")
            tokenizer = load_tokenizer(config.base)
            template = resolve_template(config.template, tokenizer, config.base)
            preview = preview_dialogue(tokenizer, data.dialogues[0], template=template,
                                       cutoff_len=config.cutoff_len, loss=config.loss)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._show_preview, Text(error_text(exc), style="red"))
            return
        head = Text(f"{preview.source}: {preview.n_tokens} tokens, "
                    f"{preview.encoded.n_trained} trained (highlighted)"
                    f"{', cut at the cutoff' if preview.encoded.truncated else ''}; "
                    f"{len(data.dialogues)} dialogues in all\n", style="italic")
        self.app.call_from_thread(self._show_preview, head + preview_text(preview))

    def _show_preview(self, text: Text) -> None:
        self.query_one("#tr-preview", Static).update(text)

    # ------------------------------------------------------------------ start / stop / resume

    @on(Button.Pressed, "#tr-start")
    def action_start(self) -> None:
        """Validate, read the data and launch the trainer (in a thread)."""
        if self._busy:
            return
        try:
            config = self.read_config()
            out = self._value("out")
            if not out:
                raise UserError("Run directory: give a directory for the run")
        except UserError as exc:
            self._message(str(exc), True)
            return
        self._set_busy(True)
        self._message("Checking the settings and reading the data…")
        self._start(config, Path(out).expanduser())

    @on(Button.Pressed, "#tr-stop")
    def action_stop_run(self) -> None:
        """Ask the trainer to checkpoint and exit at the next step."""
        from baize_tui.train.runs import request_stop

        if self.run is None:
            return
        try:
            request_stop(self.run.dir, save=True)
        except _ERRORS as exc:
            self._message(str(exc), True)
            return
        self._message("Stop requested: the trainer saves a checkpoint at the next step, then exits.")

    @on(Button.Pressed, "#tr-kill")
    def action_kill_run(self) -> None:
        """SIGTERM to the trainer: it leaves at the next step without saving."""
        from baize_tui.train.runs import cancel_run

        if self.run is None:
            return
        try:
            cancel_run(self.run.dir)
        except _ERRORS as exc:
            self._message(str(exc), True)
            return
        self._message("Kill sent: the last periodic checkpoint can be resumed.")

    @on(Button.Pressed, "#tr-resume")
    def action_resume_run(self) -> None:
        """Continue the run from its last checkpoint (launched in a thread)."""
        if self.run is None or self._busy:
            return
        self._set_busy(True)
        self._message(f"Resuming {self.run.dir}…")
        self._resume(self.run.dir)

    # ------------------------------------------------------------------ convert

    @on(Button.Pressed, "#tr-convert")
    def action_convert(self) -> None:
        """Merge the finished adapter into its base and write a GGUF to the models directory."""
        from baize_convert.quantize import parse_quant

        if self.run is None or self._busy:
            return
        try:
            qt = parse_quant(self._value("quant") or "q4_k_m")
        except Exception as exc:  # the converter's error for an unknown quant name
            self._message(str(exc), True)
            return
        output = get_paths().models_dir / f"{self.run.dir.name}-{qt.label}.gguf"
        self._set_busy(True)
        bar = self.query_one("#tr-convert-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self._message(f"Converting {self.run.adapter_dir} → {output}…")
        self._convert(self.run.adapter_dir, qt.name, output)

    # ------------------------------------------------------------------ runs and attaching

    @on(Button.Pressed, "#tr-refresh")
    def _refresh_pressed(self) -> None:
        self.refresh_runs()

    @on(Select.Changed, "#tr-runs")
    def _pick_run(self, event: Select.Changed) -> None:
        from baize_tui.train.runs import Run

        if isinstance(event.value, str) and (self.run is None or str(self.run.dir) != event.value):
            try:
                self.attach(Run.open(event.value))
            except _ERRORS as exc:
                self._message(str(exc), True)

    def fill_form(self, config: Any) -> None:
        """Show a run's settings in the form (after a relaunch the form is not empty)."""
        self.query_one("#tr-base", Input).value = config.base
        self.query_one("#tr-data", Input).value = ", ".join(config.data)
        self.query_one("#tr-init-adapter", Input).value = getattr(config, "init_adapter", "") \
            or ""
        for key, field, _kind, _label in _NUMBERS:
            value = getattr(config, field)
            self.query_one(f"#tr-{key}", Input).value = f"{value:g}" \
                if isinstance(value, float) else str(value)
        for key, field in (("loss-mode", "loss"), ("load-in", "load_in"),
                           ("template", "template")):
            value = getattr(config, field)
            try:
                self.query_one(f"#tr-{key}", Select).value = value
            except InvalidSelectValueError:  # a value this form does not offer: left as is
                pass
