"""Dialogs and the first-run screen: chat settings, confirmations, one-line prompts, help (the
key map) and choosing a model on first start. The chat, self-chat, training and models screens
each have a module of their own beside this one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import (
    Button,
    Footer,
    Input,
    Label,
    Markdown,
    ProgressBar,
    Select,
    Static,
    TextArea,
)

from baize_tui.chat_core import ChatSettings
from baize_tui.chat_format import FORMAT_CHOICES
from baize_tui.engines.base import SamplingParams
from baize_tui.errors import UserError
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT
from baize_tui.ui.dialogs import ConfirmDialog, FieldError, FormModal

# --------------------------------------------------------------------------- per-chat settings


_FIELDS: tuple[tuple[str, str, str], ...] = (
    # (id, label, input type)
    ("temperature", "Temperature", "number"),
    ("top_p", "Top-p", "number"),
    ("top_k", "Top-k (0 = off)", "integer"),
    ("repeat_penalty", "Repeat penalty (1 = off)", "number"),
    ("max_new_tokens", "Max new tokens", "integer"),
    ("n_ctx", "Context size (blank = model's)", "integer"),
    ("seed", "Seed (blank = random)", "integer"),
)


class SettingsScreen(FormModal["ChatSettings | None"]):
    """Per-chat settings. Dismisses with the new :class:`ChatSettings`, or ``None``.

    A :class:`~baize_tui.ui.dialogs.FormModal`: scrolls at 80x24, Ctrl+S saves, Esc cancels
    (asking first when something was edited).
    """

    HELP_TITLE = title_text = "Chat settings"
    dialog_id = "settings-dialog"

    def __init__(self, settings: ChatSettings, known_models: list[str] | None = None, *,
                 default_system: str | None = None,
                 more_models: Callable[[], list[str]] | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.known_models = known_models or []
        #: asked off the UI thread once the dialog shows (an endpoint's model list): more
        #: specs for the picker
        self.more_models = more_models
        #: shown when the chat uses its format's default system prompt (``system_prompt=None``)
        self.default_system = default_system or ""

    def compose_body(self) -> ComposeResult:
        s = self.settings
        values: dict[str, str] = {
            "temperature": f"{s.params.temperature:g}",
            "top_p": f"{s.params.top_p:g}",
            "top_k": str(s.params.top_k),
            "repeat_penalty": f"{s.params.repeat_penalty:g}",
            "max_new_tokens": str(s.params.max_new_tokens),
            "n_ctx": "" if s.n_ctx is None else str(s.n_ctx),
            "seed": "" if s.params.seed is None else str(s.params.seed),
        }
        yield Label("Model (PATH.gguf, openai:MODEL, hf:BASE[+LORA])")
        yield from self.compose_model_field(s.model)
        yield Label("LoRA adapter (ADAPTER.gguf from baize-convert lora; blank = none)")
        from baize_tui.ui.pickers import PathInput

        yield PathInput(s.lora or "", id="lora", placeholder="none")
        yield Label("Chat format (auto: the model's chat template, or Baize's when it "
                    "has none)")
        yield Select([(c, c) for c in FORMAT_CHOICES], value=s.format, id="format",
                     allow_blank=False, compact=True)
        with Horizontal(classes="label-row"):
            yield Label("System prompt", classes="grow")
            yield Button("Reset to Baize default", id="reset-system", compact=True)
        yield TextArea(self._system_shown, id="system-prompt", soft_wrap=True,
                       show_line_numbers=False)
        with Grid(id="settings-grid"):
            for key, label, kind in _FIELDS:
                yield Label(label)
                yield Input(values[key], id=key, type=kind,  # type: ignore[arg-type]
                            compact=True)

    def compose_model_field(self, model: str) -> ComposeResult:
        """The model field: a box that completes paths and known models, and the list of
        known models (narrowed to what is typed; Enter on one picks it)."""
        from baize_tui.ui.pickers import ModelInput, ModelList

        yield ModelInput(model, self.known_models, id="model")
        yield ModelList(self.known_models, "model", id="model-list")

    def on_mount(self) -> None:
        super().on_mount()
        if self.more_models is not None:
            self._more_models(self.more_models)

    @work(thread=True, group="more-models", exit_on_error=False)
    def _more_models(self, more: Callable[[], list[str]]) -> None:
        specs = more()
        if specs:
            self.app.call_from_thread(self.add_models, specs)

    def add_models(self, specs: list[str]) -> None:
        """Offer ``specs`` too (in the list and the field's completion), each once."""
        from baize_tui.ui.pickers import ModelInput, ModelList

        new = [spec for spec in specs if spec not in self.known_models]
        if not new or not self.is_mounted:
            return
        self.known_models.extend(new)
        self.query_one("#model", ModelInput).add_known(new)
        self.query_one("#model-list", ModelList).add_known(new)

    @on(Input.Changed, "#model")
    def _model_typed(self, event: Input.Changed) -> None:
        from baize_tui.ui.pickers import ModelList

        for picker in self.query(ModelList):
            picker.narrow(event.value)

    @property
    def _system_shown(self) -> str:
        s = self.settings
        return self.default_system if s.system_prompt is None else s.system_prompt

    @on(Button.Pressed, "#reset-system")
    def _reset_system(self) -> None:
        self.query_one("#system-prompt", TextArea).text = BAIZE_SYSTEM_PROMPT

    def submit(self) -> ChatSettings:
        """The settings as typed (a :class:`FieldError` names a bad field)."""
        def value(key: str) -> str:
            return self.query_one(f"#{key}", Input).value.strip()

        def number(key: str, label: str, cast: type) -> Any:
            raw = value(key)
            try:
                return cast(raw)
            except ValueError:
                raise FieldError(f"{label}: {raw!r} is not a valid number", key) from None

        labels = {key: label for key, label, _ in _FIELDS}
        params = SamplingParams(
            temperature=number("temperature", labels["temperature"], float),
            top_p=number("top_p", labels["top_p"], float),
            top_k=number("top_k", labels["top_k"], int),
            repeat_penalty=number("repeat_penalty", labels["repeat_penalty"], float),
            max_new_tokens=number("max_new_tokens", labels["max_new_tokens"], int),
            min_p=self.settings.params.min_p,
            seed=number("seed", labels["seed"], int) if value("seed") else None,
        )
        n_ctx = number("n_ctx", labels["n_ctx"], int) if value("n_ctx") else None
        if n_ctx is not None and n_ctx < 64:
            raise FieldError("Context size: must be at least 64 tokens (or blank)", "n_ctx")
        model = value("model")
        if not model:
            raise FieldError("Model: give a model (PATH.gguf, openai:MODEL or hf:BASE)", "model")
        system: str | None = self.query_one("#system-prompt", TextArea).text
        if self.settings.system_prompt is None and system == self.default_system:
            system = None  # untouched: keep following the format's default
        fmt = str(self.query_one("#format", Select).value)
        from baize_tui.ui.pickers import checked_lora

        try:
            lora = checked_lora(model, value("lora"))
        except UserError as exc:
            raise FieldError(f"LoRA adapter: {exc}", "lora") from None
        return replace(self.settings, model=model, system_prompt=system, params=params,
                       n_ctx=n_ctx, format=fmt, lora=lora)


# --------------------------------------------------------------------------- small dialogs


#: The one confirmation dialog (kept under its old name).
ConfirmScreen = ConfirmDialog


class PromptScreen(FormModal["str | None"]):
    """Asks for one line of text (a new title, a file name); Enter or Ctrl+S answers."""

    dialog_classes = "dialog small-dialog form-dialog"

    def __init__(self, question: str, value: str = "", *, ok_label: str = "OK",
                 complete_paths: bool = False) -> None:
        super().__init__()
        self.question = question
        self.value = value
        self.save_label = ok_label
        self.complete_paths = complete_paths

    def compose_body(self) -> ComposeResult:
        yield Static(Text(self.question), classes="dialog-text")
        if self.complete_paths:
            from baize_tui.ui.pickers import PathInput

            yield PathInput(self.value, id="answer")
        else:
            yield Input(self.value, id="answer")

    def submit(self) -> str:
        value = self.query_one("#answer", Input).value.strip()
        if not value:
            raise FieldError("Type an answer first (Esc cancels).", "answer")
        return value

    @on(Input.Submitted, "#answer")
    def _enter(self) -> None:
        self.action_save()


class HelpScreen(ModalScreen[None]):
    """Every key, with what it does (reflecting ``ui.keymap`` overrides)."""

    BINDINGS = [Binding("escape,f1,q", "close", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str]], title: str = "") -> None:
        super().__init__(classes="dialog-screen")
        self.rows = rows
        self.title_text = title

    def compose(self) -> ComposeResult:
        lines = [
            f"# Keys: {self.title_text}" if self.title_text else "# Keys",
            "",
            "Remap any key in `config.toml` under `[ui.keymap]`, by its id: "
            '`"chat.regenerate" = "f12"`. Every action is also in the command '
            "palette (**Ctrl+P**).",
            "",
        ]
        wide = self.app.size.width >= 100  # at 80 columns the ids would crowd the table
        lines += ["| Key | Action | id |", "|---|---|---|"] if wide else \
            ["| Key | Action |", "|---|---|"]
        for key, description, binding_id in self.rows:
            lines.append(f"| `{key}` | {description} | `{binding_id}` |" if wide
                         else f"| `{key}` | {description} |")
        if not wide:
            lines += ["", "(A wider terminal also shows each key's id.)"]
        with Vertical(id="help-dialog", classes="dialog"):
            with VerticalScroll():
                yield Markdown("\n".join(lines))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close (Esc)", id="close", compact=True)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


# --------------------------------------------------------------------------- first run

FIRST_RUN_TEXT = """\
# Welcome to baize-tui

There is no model yet. Pick one of three ways to get one. Your choice is saved as
`model.default` in config.toml (`baize-tui paths` shows where), and a chat's settings
(**F2**) can change it later.
"""


def _pull_available() -> bool:
    try:
        from baize_tui import models
    except Exception:
        return False
    return callable(getattr(models, "pull_gguf", None))


class FirstRunScreen(Screen["str | None"]):
    """Shown when no model is configured: open a GGUF, download one, or use an endpoint.

    Dismisses with the chosen model spec (already saved to the config).
    """

    BINDINGS = [Binding("ctrl+q", "app.quit", "Quit", id="first_run.quit")]

    def __init__(self, config_path: Path) -> None:
        super().__init__(id="first-run")
        self.config_path = config_path
        self._cancel_download: threading.Event | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="first-run-body"):
            yield Markdown(FIRST_RUN_TEXT, id="first-run-intro")
            with Vertical(classes="choice", id="choice-file"):
                yield Static("1. Open a GGUF file on disk", classes="choice-title")
                yield Static(
                    "A Baize (LLaMA) model converted with `baize-convert merge`, or any "
                    "downloaded .gguf.", classes="choice-help", markup=False)
                with Horizontal(classes="choice-row"):
                    from baize_tui.ui.pickers import PathInput

                    yield PathInput(placeholder="/path/to/model.gguf", id="gguf-path")
                    yield Button("Open", id="open-gguf", variant="primary", compact=True)
                yield Static("", classes="choice-error", markup=False)
            with Vertical(classes="choice", id="choice-download"):
                yield Static("2. Download one from the Hugging Face hub", classes="choice-title")
                if _pull_available():
                    yield Static("Repository and GGUF file name; or on the command line: "
                                 "baize-tui models pull REPO", classes="choice-help",
                                 markup=False)
                    with Horizontal(classes="choice-row"):
                        yield Input(placeholder="owner/repo", id="pull-repo", compact=True)
                        yield Input(placeholder="file.gguf", id="pull-file", compact=True)
                        yield Button("Download", id="pull", compact=True)
                    yield ProgressBar(id="pull-progress", show_eta=False)
                    yield Static("", classes="choice-error", markup=False)
                else:
                    yield Static("Run: baize-tui models pull REPO", classes="choice-help",
                                 markup=False)
                yield Button("Browse models and Baize recipes (F8)", id="browse-models",
                             compact=True)
            with Vertical(classes="choice", id="choice-endpoint"):
                yield Static("3. Use an OpenAI-compatible endpoint", classes="choice-title")
                yield Static("llama.cpp's server, vLLM, Ollama, or a hosted API. The key is "
                             "read from OPENAI_API_KEY.", classes="choice-help", markup=False)
                with Horizontal(classes="choice-row"):
                    yield Input(placeholder="http://127.0.0.1:8080/v1", id="endpoint-url", compact=True)
                    yield Input(placeholder="model name", id="endpoint-model", compact=True)
                    yield Button("Use", id="use-endpoint", compact=True)
                yield Static("", classes="choice-error", markup=False)
            yield Static("", id="first-run-error", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        # Typing a path works at once: the first field has focus.
        self.query_one("#gguf-path", Input).focus()

    def _error(self, message: str, choice: str | None = None) -> None:
        """Show ``message`` where the eye is: under the fields of ``choice`` (the id of the
        option's box), else at the end; and as a toast, in case that is off-screen."""
        for box in self.query(".choice-error").results(Static):
            box.update("")
        target = self.query_one("#first-run-error", Static)
        if choice is not None:
            try:
                target = self.query_one(f"#{choice} .choice-error", Static)
            except Exception:
                pass
        target.update(Text(message, style="bold red"))
        if message:
            target.scroll_visible(animate=False)
            self.notify(message, title="First run", severity="error", timeout=8)

    def _choose(self, spec: str, **extra: str) -> None:
        from baize_tui.config import set_value

        try:
            for key, value in extra.items():
                set_value(key, value)
            set_value("model.default", spec)
        except (OSError, UserError) as exc:
            self._error(f"cannot save the choice to {self.config_path}: {exc}")
            return
        self.dismiss(spec)

    @on(Input.Submitted, "#gguf-path")
    @on(Button.Pressed, "#open-gguf")
    def _open_gguf(self) -> None:
        raw = self.query_one("#gguf-path", Input).value.strip()
        if not raw:
            self._error("Type the path of a .gguf file first.", "choice-file")
            return
        path = Path(raw).expanduser()
        try:
            from baize_tui.engines.llama import inspect_gguf

            inspect_gguf(path)
        except Exception as exc:  # UserError / OperationFailed carry a clear message
            self._error(str(exc), "choice-file")
            return
        self._choose(str(path.resolve()))

    @on(Button.Pressed, "#browse-models")
    def _browse_models(self) -> None:
        self.app.switch_mode("models")

    def on_screen_resume(self) -> None:
        """Back from the models screen: a default chosen there ends the first run."""
        from baize_tui.config import load_config

        try:
            chosen = load_config()["model"]["default"]
        except UserError:
            return
        if chosen:
            self.dismiss(chosen)

    @on(Button.Pressed, "#use-endpoint")
    @on(Input.Submitted, "#endpoint-model")
    def _use_endpoint(self) -> None:
        url = self.query_one("#endpoint-url", Input).value.strip()
        model = self.query_one("#endpoint-model", Input).value.strip()
        if not url.startswith(("http://", "https://")):
            self._error("Endpoint: give a URL starting with http:// or https://",
                        "choice-endpoint")
            return
        if not model:
            self._error("Endpoint: give the model name the server expects", "choice-endpoint")
            return
        self._choose(f"openai:{model}", **{"openai.base_url": url})

    @on(Button.Pressed, "#pull")
    def _pull(self) -> None:
        repo = self.query_one("#pull-repo", Input).value.strip()
        filename = self.query_one("#pull-file", Input).value.strip()
        if not repo or not filename:
            self._error("Download: give the repository and the .gguf file name",
                        "choice-download")
            return
        self._error("", "choice-download")
        self.query_one("#pull", Button).disabled = True
        bar = self.query_one("#pull-progress", ProgressBar)
        bar.display = True
        self._cancel_download = threading.Event()
        self._download(repo, filename, bar, self._cancel_download)

    @work(thread=True, exclusive=True, group="download")
    def _download(self, repo: str, filename: str, bar: ProgressBar,
                  cancel: threading.Event) -> None:
        """Runs in a thread: widgets are only touched through ``call_from_thread``."""
        from baize_tui import models

        def progress(stage: str, done: int, total: int | None) -> None:
            self.app.call_from_thread(bar.update, total=total, progress=done)

        try:
            path = models.pull_gguf(repo, filename, progress=progress, cancel=cancel)
        except Exception as exc:
            self.app.call_from_thread(self._download_failed, str(exc))
            return
        self.app.call_from_thread(self._choose, str(path))

    def _download_failed(self, message: str) -> None:
        self.query_one("#pull", Button).disabled = False
        self._error(f"Download failed: {message}", "choice-download")

    def on_unmount(self) -> None:
        if self._cancel_download is not None:
            self._cancel_download.set()


# --------------------------------------------------------------------------- other modes
