"""The baize-tui Textual application.

For now it shows the start screen: which model is configured and how to get one. The
chat screen (history, streaming Markdown) is built on top of this app.
"""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Markdown

from baize_tui.config import load_config
from baize_tui.paths import get_paths

WELCOME = """\
# Baize

Chat with Baize on your own machine, offline.

**Configured model:** {model}

To get a model:

* convert one: `baize-convert merge --lora project-baize/baize-lora-7B --quantize q4`
* or point baize-tui at a GGUF file: set `model.default` in `{config}`

Press **q** to quit.
"""


class BaizeApp(App[None]):
    """The terminal app."""

    TITLE = "baize-tui"
    BINDINGS = [Binding("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        """Header, the welcome text and the key footer."""
        paths = get_paths()
        model = load_config()["model"]["default"] or "none yet"
        yield Header()
        with VerticalScroll():
            yield Markdown(WELCOME.format(model=model, config=paths.config_file), id="welcome")
        yield Footer()


def run() -> int:
    """Run the app until the user quits; returns the exit status."""
    BaizeApp().run()
    return 0
