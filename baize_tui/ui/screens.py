"""Dialogs and the first-run screen: chat settings, confirmations, one-line prompts, help (the
key map) and choosing a model on first start. The chat, self-chat, training and models screens
each have a module of their own beside this one."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
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
    Static,
    TextArea,
)

from baize_tui.engines.base import SamplingParams
from baize_tui.errors import UserError
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT

# --------------------------------------------------------------------------- per-chat settings


@dataclass(frozen=True)
class ChatSettings:
    """The settings of one chat: model, system prompt, sampling, context size."""

    model: str = ""
    system_prompt: str = BAIZE_SYSTEM_PROMPT
    params: SamplingParams = field(default_factory=SamplingParams)
    n_ctx: int | None = None  # None: the model's own, capped by model.max_ctx

    @classmethod
    def from_config(cls, config: dict[str, Any], model: str | None = None) -> ChatSettings:
        """Defaults for a new chat: ``model.default`` and the ``[chat]`` table of config.toml
        (``system_prompt``, ``n_ctx`` and any sampling parameter, e.g. ``temperature``)."""
        chat = config.get("chat", {}) if isinstance(config.get("chat"), dict) else {}
        try:
            params = SamplingParams.from_dict(chat)
        except (UserError, TypeError):
            params = SamplingParams()
        n_ctx = chat.get("n_ctx")
        return cls(
            model=model if model is not None else str(config.get("model", {}).get("default", "")),
            system_prompt=str(chat.get("system_prompt") or BAIZE_SYSTEM_PROMPT),
            params=params,
            n_ctx=int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None,
        )

    def stored_params(self) -> dict[str, Any]:
        """The params dict saved with a conversation (sampling plus ``n_ctx``)."""
        data = self.params.to_dict()
        if self.n_ctx:
            data["n_ctx"] = self.n_ctx
        return data

    @classmethod
    def from_conversation(cls, model: str, system_prompt: str,
                          params: dict[str, Any]) -> ChatSettings:
        """The settings stored with a conversation."""
        n_ctx = params.get("n_ctx")
        try:
            sampling = SamplingParams.from_dict(params)
        except (UserError, TypeError):
            sampling = SamplingParams()
        return cls(model=model, system_prompt=system_prompt, params=sampling,
                   n_ctx=int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None)


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


class SettingsScreen(ModalScreen["ChatSettings | None"]):
    """Per-chat settings. Dismisses with the new :class:`ChatSettings`, or ``None``."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="settings.cancel")]

    def __init__(self, settings: ChatSettings) -> None:
        super().__init__(classes="dialog-screen")
        self.settings = settings

    def compose(self) -> ComposeResult:
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
        with Vertical(id="settings-dialog", classes="dialog"):
            yield Static("Chat settings", classes="dialog-title")
            with VerticalScroll(id="settings-body"):
                yield Label("Model (PATH.gguf, openai:MODEL, hf:BASE[+LORA])")
                yield Input(s.model, id="model", compact=True)
                with Horizontal(classes="label-row"):
                    yield Label("System prompt", classes="grow")
                    yield Button("Reset to Baize default", id="reset-system", compact=True)
                yield TextArea(s.system_prompt, id="system-prompt", soft_wrap=True,
                               show_line_numbers=False)
                with Grid(id="settings-grid"):
                    for key, label, kind in _FIELDS:
                        yield Label(label)
                        yield Input(values[key], id=key, type=kind,  # type: ignore[arg-type]
                                    compact=True)
            yield Static("", id="settings-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", id="save", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Button.Pressed, "#reset-system")
    def _reset_system(self) -> None:
        self.query_one("#system-prompt", TextArea).text = BAIZE_SYSTEM_PROMPT

    def _read(self) -> ChatSettings:
        def value(key: str) -> str:
            return self.query_one(f"#{key}", Input).value.strip()

        def number(key: str, label: str, cast: type) -> Any:
            raw = value(key)
            try:
                return cast(raw)
            except ValueError:
                raise UserError(f"{label}: {raw!r} is not a valid number") from None

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
            raise UserError("Context size: must be at least 64 tokens (or blank)")
        model = value("model")
        if not model:
            raise UserError("Model: give a model (PATH.gguf, openai:MODEL or hf:BASE)")
        system = self.query_one("#system-prompt", TextArea).text
        return replace(self.settings, model=model, system_prompt=system, params=params,
                       n_ctx=n_ctx)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        try:
            settings = self._read()
        except UserError as exc:
            self.query_one("#settings-error", Static).update(Text(str(exc), style="bold red"))
            return
        self.dismiss(settings)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


# --------------------------------------------------------------------------- small dialogs


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question. Dismisses with True only when confirmed."""

    BINDINGS = [
        Binding("escape,n", "answer(False)", "No", id="confirm.no"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]

    def __init__(self, question: str, confirm_label: str = "Delete") -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small-dialog"):
            yield Static(Text(self.question), classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, id="yes", variant="error")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class PromptScreen(ModalScreen["str | None"]):
    """Asks for one line of text (a new title, a file name)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prompt.cancel")]

    def __init__(self, question: str, value: str = "", *, ok_label: str = "OK") -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.value = value
        self.ok_label = ok_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small-dialog"):
            yield Static(Text(self.question), classes="dialog-text")
            yield Input(self.value, id="answer")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.ok_label, id="ok", variant="primary")
                yield Button("Cancel", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _ok(self) -> None:
        value = self.query_one("#answer", Input).value.strip()
        if value:
            self.dismiss(value)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key, with what it does (reflecting ``ui.keymap`` overrides)."""

    BINDINGS = [Binding("escape,f1,q", "close", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__(classes="dialog-screen")
        self.rows = rows

    def compose(self) -> ComposeResult:
        lines = [
            "# Keys",
            "",
            "Remap any key in `config.toml` under `[ui.keymap]`, by its id: "
            '`"chat.regenerate" = "ctrl+g"`. Every action is also in the command '
            "palette (**Ctrl+P**).",
            "",
            "| Key | Action | id |",
            "|---|---|---|",
        ]
        for key, description, binding_id in self.rows:
            lines.append(f"| `{key}` | {description} | `{binding_id}` |")
        with Vertical(id="help-dialog", classes="dialog"):
            with VerticalScroll():
                yield Markdown("\n".join(lines))
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close")

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
                    yield Input(placeholder="/path/to/model.gguf", id="gguf-path", compact=True)
                    yield Button("Open", id="open-gguf", variant="primary", compact=True)
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
            yield Static("", id="first-run-error", markup=False)
        yield Footer()

    def _error(self, message: str) -> None:
        self.query_one("#first-run-error", Static).update(Text(message, style="bold red"))

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
            self._error("Type the path of a .gguf file first.")
            return
        path = Path(raw).expanduser()
        try:
            from baize_tui.engines.llama import inspect_gguf

            inspect_gguf(path)
        except Exception as exc:  # UserError / OperationFailed carry a clear message
            self._error(str(exc))
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
            self._error("Endpoint: give a URL starting with http:// or https://")
            return
        if not model:
            self._error("Endpoint: give the model name the server expects")
            return
        self._choose(f"openai:{model}", **{"openai.base_url": url})

    @on(Button.Pressed, "#pull")
    def _pull(self) -> None:
        repo = self.query_one("#pull-repo", Input).value.strip()
        filename = self.query_one("#pull-file", Input).value.strip()
        if not repo or not filename:
            self._error("Download: give the repository and the .gguf file name")
            return
        self._error("")
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
        self._error(f"Download failed: {message}")

    def on_unmount(self) -> None:
        if self._cancel_download is not None:
            self._cancel_download.set()


# --------------------------------------------------------------------------- other modes
