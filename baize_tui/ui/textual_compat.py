"""Every use of Textual's private API, in one module, each with a guarded fallback.

The app is checked against the Textual versions in ``pyproject.toml``. A newer release may
move or rename a private name; the app must then still start, send on Enter, insert a newline
on Shift+Enter and quit, at worst a little slower. :data:`PRIVATE_NAMES` lists every name used
here, and ``tests/test_private_api.py`` fails, naming it, when an upgrade moves one.

One layout pass per streamed write, not two or three
----------------------------------------------------

While a reply streams, each write is laid out by Textual; a pass over the chat screen costs
tens of milliseconds, and Textual 8 ran two or three of them per write where one gives the
same screen. Three causes, and what the chat screen does about each:

* A widget's ``virtual_size`` is a reactive that asks for a layout when it changes, and a
  layout pass sets it on every widget it resized. So every pass that grows the reply asks for
  a second pass, which measures the same sizes again. :func:`quiet_virtual_size` (through :class:`OneLayoutPass`) lets the
  chat screen's full pass set it without asking, as Textual's own scroll-only pass does.
  (Scroll bars appearing or going still ask for a layout: they are reactives of their own.)
* After a full pass the compositor still marks its map of all widgets out of date, so the
  next lookup of a widget's place rebuilds that map: a second arrangement of the whole
  screen, in the same pass or in the next spinner frame. :class:`ReflowCompositor` knows the
  map it has just built is current.
* New Markdown blocks report that they need layout only when something next wakes them;
  :class:`~baize_tui.ui.widgets.Segment` wakes them before the pass, not after.

Both helpers reach into Textual internals (``Reactive._layout``, ``Compositor
._full_map_invalidated``), and the chat screen wraps Textual's private
``Screen._refresh_layout``, passing its arguments through. If a Textual release renames any of
them, they do nothing (the screen looks the same, each write costs more) and
``tests/test_ui.py::test_one_layout_pass_per_streamed_write`` fails to say so. If
``textual._compositor`` itself moves, :func:`install_reflow_compositor` does nothing and the screen keeps
Textual's own compositor.

The rest
--------

:func:`screen_stack` (``App._screen_stacks``: a mode's screens before it is shown),
:func:`current_keymap` (``App._keymap``: the user's remapped keys, for the help screen) and
:func:`insert_newline` (``TextArea._replace_via_keyboard``: an edit that respects read-only and
the undo history) each fall back to public API, with less detail, when the name is gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from textual.widget import Widget

if TYPE_CHECKING:
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import TextArea

try:
    from textual._compositor import Compositor, ReflowResult
except ImportError:  # moved in a newer Textual: keep the stock compositor (see make_compositor)
    Compositor = None  # type: ignore[assignment,misc]
    ReflowResult = Any  # type: ignore[assignment,misc]

#: Every private Textual name this app touches: (module, attribute path). The test named in the
#: module docstring imports each one; keep this list and the code below in step.
PRIVATE_NAMES: tuple[tuple[str, str], ...] = (
    ("textual._compositor", "Compositor"),
    ("textual._compositor", "ReflowResult"),
    ("textual._compositor", "Compositor.reflow"),
    ("textual._compositor", "Compositor._full_map_invalidated"),  # set in __init__
    ("textual.widget", "Widget.virtual_size._layout"),
    ("textual.widget", "Widget.virtual_size._repaint"),
    ("textual.screen", "Screen._refresh_layout"),
    ("textual.screen", "Screen._compositor"),  # set in __init__
    ("textual.app", "App._screen_stacks"),  # set in __init__
    ("textual.app", "App._keymap"),  # set in __init__
    ("textual.widgets", "TextArea._replace_via_keyboard"),
)


@contextmanager
def quiet_virtual_size() -> Iterator[None]:
    """Within this block, setting a widget's ``virtual_size`` asks for no layout or repaint."""
    reactive = Widget.__dict__.get("virtual_size")
    if reactive is None or not hasattr(reactive, "_layout") or not hasattr(reactive, "_repaint"):
        yield
        return
    layout, repaint = reactive._layout, reactive._repaint
    reactive._layout = reactive._repaint = False
    try:
        yield
    finally:
        reactive._layout, reactive._repaint = layout, repaint


_CompositorBase: Any = Compositor if Compositor is not None else object


class ReflowCompositor(_CompositorBase):  # type: ignore[misc]
    """A compositor that keeps the map of all widgets that a full reflow has just built."""

    def reflow(self, *args: Any, **kwargs: Any) -> ReflowResult:
        result = super().reflow(*args, **kwargs)
        # reflow arranged every widget (visible or not) at this size: the very map that
        # full_map would build again on the next lookup.
        self._full_map_invalidated = False
        return result


def install_reflow_compositor(screen: Screen[Any]) -> bool:
    """Give ``screen`` a :class:`ReflowCompositor` (call from its ``__init__``); False, and
    Textual's own compositor kept, when this Textual has none where we look for it."""
    if Compositor is None or not isinstance(getattr(screen, "_compositor", None), Compositor):
        return False
    screen._compositor = ReflowCompositor()
    return True


class OneLayoutPass:
    """Mixin for a :class:`~textual.screen.Screen`: its full layout passes set widget sizes
    quietly (see :func:`quiet_virtual_size`), and :meth:`layout_pass_done` runs after each.
    Without Textual's private ``Screen._refresh_layout`` the hook is simply never called."""

    def _refresh_layout(self, *args: Any, **kwargs: Any) -> None:
        # A pass that resizes widgets would otherwise ask for a second, identical pass: with
        # a streaming reply, that is every pass. (Arguments passed through as they come.)
        with quiet_virtual_size():
            super()._refresh_layout(*args, **kwargs)  # type: ignore[misc]
        self.layout_pass_done()

    def layout_pass_done(self) -> None:
        """Called after every layout pass of the screen."""


def screen_stack(app: App[Any], mode: str) -> list[Screen[Any]]:
    """The screens of ``mode`` (bottom first), also for a mode that is not shown now.
    Without the private map: only the current mode's stack is known."""
    stacks = getattr(app, "_screen_stacks", None)
    if isinstance(stacks, dict):
        return list(stacks.get(mode) or [])
    return list(app.screen_stack) if app.current_mode == mode else []


def current_keymap(app: App[Any]) -> dict[str, str]:
    """Binding id -> keys as remapped with ``App.set_keymap`` ({} when it cannot be read:
    the help screen then shows the default keys)."""
    keymap = getattr(app, "_keymap", None)
    return dict(keymap) if isinstance(keymap, dict) else {}


def insert_newline(area: TextArea) -> None:
    """Replace the selection with a newline, as typing would (undo history, read-only)."""
    start, end = area.selection
    replace = getattr(area, "_replace_via_keyboard", None)
    if callable(replace):
        replace("\n", start, end)
    elif not area.read_only:
        area.replace("\n", start, end)
