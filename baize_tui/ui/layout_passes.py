"""One layout pass per streamed write, not two or three.

While a reply streams, each write is laid out by Textual; a pass over the chat screen costs
tens of milliseconds, and Textual 8 ran two or three of them per write where one gives the
same screen. Three causes, and what the chat screen does about each:

* A widget's ``virtual_size`` is a reactive that asks for a layout when it changes, and a
  layout pass sets it on every widget it resized. So every pass that grows the reply asks for
  a second pass, which measures the same sizes again. :func:`quiet_virtual_size` lets the
  chat screen's full pass set it without asking, as Textual's own scroll-only pass does.
  (Scroll bars appearing or going still ask for a layout: they are reactives of their own.)
* After a full pass the compositor still marks its map of all widgets out of date, so the
  next lookup of a widget's place rebuilds that map: a second arrangement of the whole
  screen, in the same pass or in the next spinner frame. :class:`ReflowCompositor` knows the
  map it has just built is current.
* New Markdown blocks report that they need layout only when something next wakes them;
  :class:`~baize_tui.ui.widgets.Segment` wakes them before the pass, not after.

Both helpers here reach into Textual internals (``Reactive._layout``, ``Compositor
._full_map_invalidated``), and the chat screen wraps Textual's private
``Screen._refresh_layout``, passing its arguments through. If a Textual release renames any of
them, they do nothing (the screen looks the same, each write costs more) and
``tests/test_ui.py::test_one_layout_pass_per_streamed_write`` fails to say so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from textual._compositor import Compositor, ReflowResult
from textual.widget import Widget


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


class ReflowCompositor(Compositor):
    """A compositor that keeps the map of all widgets that a full reflow has just built."""

    def reflow(self, *args: Any, **kwargs: Any) -> ReflowResult:
        result = super().reflow(*args, **kwargs)
        # reflow arranged every widget (visible or not) at this size: the very map that
        # full_map would build again on the next lookup.
        self._full_map_invalidated = False
        return result
