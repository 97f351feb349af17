"""Moved to :mod:`baize_tui.ui.textual_compat` (every private Textual name in one module);
the names stay importable from here."""

from baize_tui.ui.textual_compat import ReflowCompositor, quiet_virtual_size

__all__ = ["ReflowCompositor", "quiet_virtual_size"]
