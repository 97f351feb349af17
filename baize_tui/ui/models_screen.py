"""The models screen: GGUF files on disk, the default model, and getting a model from the hub.

A thin shell over :mod:`baize_tui.models` (every action has a ``baize-tui models`` twin):
the table is ``list_models()`` (read in a thread: headers only, but a slow disk should not
freeze the UI), *Set default* is ``set_default``, *Delete* is ``remove_model`` after a
confirmation, and the "get a model" panel runs ``pull`` (any GGUF repo) or, for the known
Baize models of :mod:`baize_tui.catalog`, ``plan_recipe`` then — once the user has seen the
disk space and time it needs and said yes — ``run_recipe``. Work runs in thread workers that
report through ``call_from_thread``; nothing read from disk or the hub is parsed as markup.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, Select, Static

from baize_tui.catalog import KNOWN_MODELS, find_known
from baize_tui.errors import OperationFailed, UserError
from baize_tui.ui.dialogs import ConfirmDialog

_ERRORS = (UserError, OperationFailed, OSError)

def error_text(exc: BaseException) -> str:
    """The message to show for ``exc``: a user-facing error's own words, else its type too."""
    return str(exc) if isinstance(exc, _ERRORS) else f"{type(exc).__name__}: {exc}"



def human_size(n: int) -> str:
    """Bytes as a short human string (``1.2 GB``)."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


#: The app's one confirmation dialog (``y``/Enter confirm, ``n``/Esc cancel).
ConfirmModal = ConfirmDialog


class ModelsScreen(Screen[None]):
    """Local GGUF models (set default, delete) and a panel that downloads or builds one."""

    HELP_TITLE = "Models"

    DEFAULT_CSS = """
    ModelsScreen { layout: vertical; }
    ModelsScreen .title { text-style: bold; padding: 0 1; }
    ModelsScreen #offline { color: $warning; padding: 0 1; display: none; }
    ModelsScreen #offline.shown { display: block; }
    ModelsScreen #models { height: 1fr; min-height: 5; }
    ModelsScreen .buttons { height: auto; padding: 0 1; }
    ModelsScreen .buttons Button { margin-right: 1; min-width: 10; }
    ModelsScreen #models-status { height: auto; padding: 0 1; }
    ModelsScreen #get-panel {
        height: auto;
        border: round $primary;
        border-title-align: left;
        padding: 0 1;
    }
    ModelsScreen #get-panel Horizontal { height: auto; }
    ModelsScreen #get-panel Label { padding: 0 1 0 0; }
    ModelsScreen #get-panel Button { min-width: 10; margin-left: 1; }
    ModelsScreen #repo { width: 2fr; }
    ModelsScreen #file { width: 1fr; }
    ModelsScreen #quant { width: 14; }
    ModelsScreen #known { width: 1fr; }
    ModelsScreen #pull-progress { margin: 1 0 0 0; display: none; }
    ModelsScreen #pull-progress.active { display: block; }
    ModelsScreen #pull-status { height: auto; }
    """

    BINDINGS = [
        Binding("d", "set_default", "Set default", id="models.default"),
        Binding("delete", "delete", "Delete", id="models.delete"),
        Binding("r", "refresh", "Refresh", id="models.refresh"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.models: list[Any] = []  # ModelFile, in table order
        self._cancel: threading.Event | None = None
        self._busy = False
        self._last_progress = 0.0

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("Models", classes="title")
        yield Static("", id="offline", markup=False)
        table: DataTable[Any] = DataTable(id="models", cursor_type="row", zebra_stripes=True)
        yield table
        with Horizontal(classes="buttons"):
            yield Button("Set default", id="set-default", variant="primary", compact=True)
            yield Button("Delete…", id="delete", variant="error", compact=True)
            yield Button("Refresh", id="refresh", compact=True)
        yield Static("", id="models-status", markup=False)
        panel = Vertical(id="get-panel")
        panel.border_title = "Get a model"
        with panel:
            with Horizontal():
                yield Input(placeholder="hub repo, e.g. project-baize/baize-v2-7b or ORG/NAME-GGUF",
                            id="repo", compact=True)
                yield Input(placeholder="file (optional)", id="file", compact=True)
                yield Input("q4_k_m", placeholder="quant", id="quant", compact=True)
            with Horizontal():
                yield Label("Baize models:")
                yield Select([(f"{m.repo} ({m.params}, {m.kind})", m.repo) for m in KNOWN_MODELS],
                             prompt="quick pick", id="known", compact=True)
                yield Button("Get", id="get", variant="success", compact=True)
                yield Button("Cancel", id="cancel", disabled=True, compact=True)
            yield ProgressBar(id="pull-progress", show_eta=True)
            yield Static("", id="pull-status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#models", DataTable)
        # Status right after the name: at 80 columns the last columns are off-screen.
        table.add_columns("", "Name", "Status", "Quant", "Context", "Size", "Template", "Source")
        self._check_offline()
        self.refresh_models()

    def _check_offline(self) -> None:
        from baize_tui.models import is_offline

        banner = self.query_one("#offline", Static)
        offline = is_offline()
        banner.set_class(offline, "shown")
        if offline:
            banner.update("Offline: HF_HUB_OFFLINE is set, so downloads are off. Models on disk "
                          "still work; unset HF_HUB_OFFLINE to get new ones.")
        self.query_one("#get", Button).disabled = offline or self._busy

    # ------------------------------------------------------------------ the table

    def refresh_models(self) -> None:
        """Re-read the models from disk (in a thread) and redraw the table."""
        self._list_models()

    @work(thread=True, exclusive=True, group="models-list", exit_on_error=False)
    def _list_models(self) -> None:
        from baize_tui.known_models import list_known_models

        app: Any = self.app
        in_use = [str(getattr(app, "model_spec", "") or "")]
        try:
            found = list_known_models(getattr(app, "history", None), in_use)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._status, f"cannot list models: {error_text(exc)}")
            return
        self.app.call_from_thread(self._fill, found)

    def _fill(self, found: list[Any]) -> None:
        table = self.query_one("#models", DataTable)
        keep = self.selected()
        table.clear()
        self.models = list(found)
        for model in self.models:
            if model.broken:
                status = Text(f"broken: {model.error}", style="red")
            elif model.kind == "adapter":
                status = Text("LoRA adapter", style="dim")
            else:
                status = Text("ok")
            template = ("Baize" if model.baize_template else
                        "yes" if model.has_chat_template else "-")
            table.add_row(
                Text("★" if model.is_default else ""),
                Text(model.name),
                status,
                Text(model.quant or "?"),
                Text(str(model.context_length) if model.context_length else "?"),
                Text(human_size(model.size)),
                Text(template),
                Text(model.source),
                key=str(model.path),
            )
        if keep is not None:
            for i, model in enumerate(self.models):
                if model.path == keep.path:
                    table.move_cursor(row=i)
                    break
        if not self.models:
            from baize_tui.paths import get_paths

            self._status(f"No GGUF models found. Get one below, or put .gguf files in "
                         f"{get_paths().models_dir}.")
        else:
            self._status(f"{len(self.models)} model(s); ★ = default")

    def selected(self) -> Any | None:
        """The :class:`~baize_tui.models.ModelFile` under the table cursor."""
        table = self.query_one("#models", DataTable)
        if not self.models or table.row_count == 0:
            return None
        row = table.cursor_row
        return self.models[row] if 0 <= row < len(self.models) else None

    def _spec(self, model: Any) -> str:
        """How to name ``model`` to ``set_default``/``remove_model``: its file name when that is
        unique (``find_model`` with a path trips over an unset default on some Pythons), else
        its path."""
        same = [m for m in self.models if m.name == model.name]
        return model.name if len(same) == 1 else str(model.path)

    def _status(self, message: str) -> None:
        self.query_one("#models-status", Static).update(Text(message))

    # ------------------------------------------------------------------ actions

    @on(Button.Pressed, "#refresh")
    def action_refresh(self) -> None:
        """Read the models again."""
        self._check_offline()
        self.refresh_models()

    @on(Button.Pressed, "#set-default")
    def action_set_default(self) -> None:
        """Make the selected model the default (config ``model.default``)."""
        from baize_tui.models import set_default

        model = self.selected()
        if model is None:
            self._status("No model selected.")
            return
        try:
            chosen = set_default(self._spec(model))
        except (*_ERRORS, ValueError) as exc:
            self._status(str(exc))
            self.notify(str(exc), severity="error", markup=False)
            return
        self._status(f"Default model: {chosen.path}")
        self.notify(f"{chosen.name} is now the default model", markup=False)
        default_changed = getattr(self.app, "default_model_changed", None)
        if default_changed is not None:  # the chat app: new chats use it from now on
            default_changed(str(chosen.path))
        self.refresh_models()

    @on(Button.Pressed, "#delete")
    def action_delete(self) -> None:
        """Delete the selected model after a confirmation."""
        model = self.selected()
        if model is None:
            self._status("No model selected.")
            return
        body = f"{model.path}\n{human_size(model.size)}, deleted from disk for good."
        if model.is_default:
            body += "\nIt is the default model; the default will be cleared."
        self.app.push_screen(ConfirmDialog(f"Delete {model.name}?", "Delete", body=body),
                             lambda yes: self._delete(model, bool(yes)))

    def _delete(self, model: Any, yes: bool) -> None:
        from baize_tui.models import remove_model

        if not yes:
            self._status("Nothing deleted.")
            return
        try:
            removed = remove_model(self._spec(model))
        except (*_ERRORS, ValueError) as exc:
            self._status(str(exc))
            self.notify(str(exc), severity="error", markup=False)
            return
        self._status(f"Deleted {removed.path}")
        self.refresh_models()

    # ------------------------------------------------------------------ get a model

    @on(Select.Changed, "#known")
    def _pick_known(self, event: Select.Changed) -> None:
        if isinstance(event.value, str):
            self.query_one("#repo", Input).value = event.value
            self.query_one("#file", Input).value = ""

    @on(Input.Submitted, "#repo")
    @on(Button.Pressed, "#get")
    def action_get(self) -> None:
        """Start getting the model named in the panel (plan first for a known Baize model)."""
        from baize_tui.models import is_offline

        if self._busy:
            return
        repo = self.query_one("#repo", Input).value.strip()
        file = self.query_one("#file", Input).value.strip() or None
        quant = self.query_one("#quant", Input).value.strip() or None
        if not repo or "/" not in repo:
            self._pull_status("Give a hub repo as ORG/NAME.", error=True)
            return
        if is_offline():
            self._check_offline()
            self._pull_status("Offline: HF_HUB_OFFLINE is set; unset it to download.", error=True)
            return
        self._set_busy(True)
        if file is None and find_known(repo) is not None:
            self._pull_status(f"Asking the hub what {repo} needs…")
            self._plan(repo, quant)
        else:
            self._cancel = threading.Event()
            self.query_one("#cancel", Button).disabled = False
            self._pull_status(f"Downloading from {repo}…")
            self._pull(repo, file, quant, self._cancel)

    @on(Button.Pressed, "#cancel")
    def action_cancel_pull(self) -> None:
        """Stop the download between chunks (the partial file stays for a later resume)."""
        if self._cancel is not None:
            self._cancel.set()
            self._pull_status("Cancelling…")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        # The bar shows only while something downloads (idle, it would animate "--%").
        self.query_one("#pull-progress", ProgressBar).set_class(busy, "active")
        self.query_one("#get", Button).disabled = busy
        self.query_one("#cancel", Button).disabled = not busy or self._cancel is None
        if not busy:
            self._cancel = None
            self._check_offline()

    def _pull_status(self, message: str, *, error: bool = False) -> None:
        self.query_one("#pull-status", Static).update(
            Text(message, style="red" if error else ""))

    def _progress_from_thread(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if total is not None and done < total and now - self._last_progress < 0.1:
            return  # about 10 updates a second; the last one always goes through
        self._last_progress = now
        self.app.call_from_thread(self._show_progress, stage, done, total)

    def _show_progress(self, stage: str, done: int, total: int | None) -> None:
        bar = self.query_one("#pull-progress", ProgressBar)
        bar.update(total=total, progress=done)
        amount = f"{human_size(done)} of {human_size(total)}" if total and total > 1 else ""
        self._pull_status(f"{stage} {amount}".strip())

    @work(thread=True, exclusive=True, group="models-pull", exit_on_error=False)
    def _pull(self, repo: str, file: str | None, quant: str | None,
              cancel: threading.Event) -> None:
        from baize_tui.models import PullCancelled, pull

        try:
            path = pull(repo, file, quant=quant, progress=self._progress_from_thread,
                        cancel=cancel)
        except PullCancelled as exc:
            self.app.call_from_thread(self._pull_done, None, f"Cancelled: {exc}")
            return
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._pull_done, None, error_text(exc))
            return
        self.app.call_from_thread(self._pull_done, path, "")

    @work(thread=True, exclusive=True, group="models-pull", exit_on_error=False)
    def _plan(self, repo: str, quant: str | None) -> None:
        from baize_tui.models import plan_recipe

        try:
            plan = plan_recipe(repo, quant)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._pull_done, None, error_text(exc))
            return
        self.app.call_from_thread(self._confirm_plan, plan)

    def _confirm_plan(self, plan: Any) -> None:
        self._pull_status(plan.describe())
        self.app.push_screen(
            ConfirmDialog(f"Build {plan.output.name}?", "Download and convert",
                          body=plan.describe(), danger=False),
            lambda yes: self._plan_answer(plan, bool(yes)))

    def _plan_answer(self, plan: Any, yes: bool) -> None:
        if not yes:
            self._pull_done(None, "Not started.")
            return
        self._cancel = threading.Event()
        self.query_one("#cancel", Button).disabled = False
        self._pull_status(f"Getting {plan.repo}… (a conversion cannot be cancelled once it runs)")
        self._recipe(plan, self._cancel)

    @work(thread=True, exclusive=True, group="models-pull", exit_on_error=False)
    def _recipe(self, plan: Any, cancel: threading.Event | None = None) -> None:
        from baize_tui.models import run_recipe

        try:
            path = run_recipe(plan, progress=self._progress_from_thread, cancel=cancel)
        except Exception as exc:  # hub, disk and the converter's own errors: shown
            self.app.call_from_thread(self._pull_done, None, error_text(exc))
            return
        self.app.call_from_thread(self._pull_done, path, "")

    def _pull_done(self, path: Path | None, error: str) -> None:
        self._set_busy(False)
        if path is None:
            self._pull_status(error, error=bool(error) and not error.startswith("Not started"))
            return
        self._pull_status(f"Saved {path}. Select it and press Set default to chat with it.")
        self.notify(f"Got {path.name}", markup=False)
        self.refresh_models()
