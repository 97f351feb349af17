"""The two dialog shapes every screen uses: one confirmation and one form.

* :class:`ConfirmDialog` asks a yes/no question. ``y`` or Enter (on the confirming button,
  which has focus) confirms; ``n`` or Esc cancels. Every "are you sure?" in the app is this
  widget, so the keys are the same everywhere.
* :class:`FormModal` is the base of every modal with fields (chat settings, a title, an export
  path). Its body scrolls and the dialog fits a terminal of 80x24, the buttons always in
  view; Ctrl+S saves from any field; Esc cancels, and asks first when fields were edited;
  an error is shown next to the buttons (where the eye is) and the offending field gets
  focus.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Select, Static, TextArea

from baize_tui.errors import UserError

ResultT = TypeVar("ResultT")


class FieldError(UserError):
    """Bad input in one field of a form: ``field`` is the widget id to focus."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

#: Rows a form dialog needs besides its body: border (2), title (2), error line (1),
#: buttons (1 + margin 2).
FORM_CHROME_ROWS = 8


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question; dismisses with ``True`` only when confirmed.

    ``y`` or Enter confirms (the confirming button has focus), ``n`` or Esc cancels.
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", priority=True, id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", priority=True, id="confirm.no"),
    ]

    def __init__(self, question: str, confirm_label: str = "Yes", *, body: str = "",
                 danger: bool = True) -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.body = body
        self.confirm_label = confirm_label
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog small-dialog confirm-dialog"):
            yield Static(Text(self.question), classes="dialog-title confirm-title")
            if self.body:
                with VerticalScroll(classes="confirm-scroll"):
                    yield Static(Text(self.body), classes="confirm-body")
            yield Static(Text("y / Enter: " + self.confirm_label + "    n / Esc: cancel",
                              style="dim"), classes="confirm-keys")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, id="yes", compact=True,
                             variant="error" if self.danger else "primary")
                yield Button("Cancel", id="no", compact=True)

    def on_mount(self) -> None:
        self.query_one("#yes", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Close the dialog with ``answer``."""
        self.dismiss(answer)


def field_value(widget: Widget) -> Any:
    """The current value of a form field (for "was anything edited?")."""
    if isinstance(widget, TextArea):
        return widget.text
    if isinstance(widget, (Input, Select, Checkbox)):
        return widget.value
    return None


class FormModal(ModalScreen[ResultT], Generic[ResultT]):
    """Base of every modal with fields: scrolls, fits 80x24, Ctrl+S saves, Esc cancels.

    A subclass yields its fields from :meth:`compose_body` and turns them into its result in
    :meth:`submit` (raising :class:`FieldError`, which names the field to focus, or any
    :class:`UserError` for bad input). ``title_text`` heads the dialog.
    """

    BINDINGS = [
        Binding("ctrl+s", "save", "Save", priority=True, id="form.save"),
        Binding("escape", "cancel", "Cancel", id="form.cancel"),
    ]

    HELP_TITLE = "Dialog"
    title_text = ""
    save_label = "Save"
    dialog_id: str | None = None
    dialog_classes = "dialog form-dialog"

    def __init__(self) -> None:
        super().__init__(classes="dialog-screen")
        self._initial: dict[str, Any] = {}

    # ---- for subclasses

    def compose_body(self) -> ComposeResult:
        """The fields (inside the scrolling body)."""
        yield from ()

    def submit(self) -> ResultT:
        """Read the fields into the result; raise :class:`UserError` for bad input."""
        raise NotImplementedError

    def compose_buttons(self) -> ComposeResult:
        """The buttons (Save and Cancel by default)."""
        yield Button(f"{self.save_label} (^S)", id="save", variant="primary", compact=True)
        yield Button("Cancel (Esc)", id="cancel", compact=True)

    # ---- the frame

    def compose(self) -> ComposeResult:
        with Vertical(id=self.dialog_id, classes=self.dialog_classes):
            if self.title_text:
                yield Static(self.title_text, classes="dialog-title", markup=False)
            with VerticalScroll(classes="form-body"):
                yield from self.compose_body()
            yield Static("", classes="form-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield from self.compose_buttons()

    #: The first field has focus when the dialog opens (Textual's own auto-focus, which
    #: never takes focus from where keys typed meanwhile have put it).
    AUTO_FOCUS = "Input, TextArea, Select, Checkbox"

    def on_mount(self) -> None:
        self._initial = self.values()
        self._fit()

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """Give the body what the terminal has left after the title, error and buttons."""
        body = self.query_one(".form-body", VerticalScroll)
        body.styles.max_height = max(3, self.app.size.height - FORM_CHROME_ROWS)

    def values(self) -> dict[str, Any]:
        """Every field's value by widget id."""
        return {w.id: field_value(w) for w in self.query("Input, TextArea, Select, Checkbox")
                if w.id}

    @property
    def edited(self) -> bool:
        """Whether any field differs from what the dialog opened with."""
        return self.values() != self._initial

    def show_error(self, message: str, field: str | None = None) -> None:
        """Show ``message`` next to the buttons and focus ``field`` (a widget id)."""
        self.query_one(".form-error", Static).update(Text(message, style="bold red"))
        if field:
            try:
                target = self.query_one(f"#{field}")
            except Exception:
                return
            target.focus()
            target.scroll_visible(animate=False)

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        """Check the fields and close with the result."""
        try:
            result = self.submit()
        except UserError as exc:
            self.show_error(str(exc), getattr(exc, "field", None))
            return
        self.dismiss(result)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.action_cancel()

    @work(group="form-cancel", exclusive=True)
    async def action_cancel(self) -> None:
        """Close without saving; asks first if anything was edited."""
        if self.edited:
            sure = await self.app.push_screen_wait(
                ConfirmDialog("Discard your changes?", "Discard"))
            if not sure:
                return
        self.dismiss(None)  # type: ignore[arg-type]
