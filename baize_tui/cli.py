"""``baize-tui`` command line: parses arguments and hands off to the packages.

Each subcommand lives in ``baize_tui/commands/<name>.py`` with a ``register(subparsers)``
function; this module only wires them together, so it stays cheap to import (no torch,
transformers or Textual until a command needs them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from baize_tui import __version__
from baize_tui.errors import run_reporting_errors

# Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = ("ask", "history", "models", "paths", "sdf", "selfchat", "train")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="baize-tui",
        description=(
            "Chat with Baize on local GGUF weights. Without a subcommand, opens the terminal app."
        ),
    )
    parser.add_argument("--version", action="version", version=f"baize-tui {__version__}")
    parser.add_argument(
        "-m", "--model", metavar="SPEC",
        help="open the app on this model (PATH.gguf, openai:MODEL, hf:BASE[+LORA]) without "
        "changing the saved default; `baize-tui MODEL.gguf` does the same")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"baize_tui.commands.{name}")
        module.register(subparsers)
    return parser


def _model_path_as_option(parser: argparse.ArgumentParser,
                          argv: Sequence[str] | None) -> list[str]:
    """``baize-tui MODEL.gguf`` means ``baize-tui -m MODEL.gguf`` (as ``llama-cli -m`` and
    ``ollama run`` users expect): a first argument that is no subcommand but a GGUF path."""
    from pathlib import Path

    args = list(sys.argv[1:] if argv is None else argv)
    commands: set[str] = set()
    for action in parser._subparsers._group_actions if parser._subparsers else []:
        commands.update(getattr(action, "choices", None) or {})
    if args and not args[0].startswith("-") and args[0] not in commands:
        first = args[0]
        if first.lower().endswith(".gguf") or Path(first).expanduser().is_file():
            return ["-m", first, *args[1:]]
    return args


def run_app(args: argparse.Namespace) -> int:
    """Open the Textual app (imported only now, so subcommands never pay for it)."""
    from baize_tui.ui.app import run

    return run(model=getattr(args, "model", None))


def log_to_file() -> None:
    """Send INFO and above (llama.cpp's load log included) to the log file of ``paths``.

    The file is opened on the first record only, so commands that log nothing create nothing;
    credentials in URLs and registered keys are redacted (:mod:`baize_tui.redact`).
    """
    import logging

    from baize_tui.paths import get_paths

    root = logging.getLogger()
    if any(getattr(h, "baize_log", False) for h in root.handlers):
        return
    from baize_tui.redact import QuietFileHandler

    path = get_paths().log_file
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only or full home: run without a log rather than not at all
        return
    handler = QuietFileHandler(str(path), encoding="utf-8", delay=True)
    handler.baize_log = True  # type: ignore[attr-defined]
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baize-tui`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(_model_path_as_option(parser, argv))
    handler = getattr(args, "func", run_app)
    if getattr(args, "command", None) != "paths":
        log_to_file()
    if handler is run_app:  # the app installs its own (it must exit through Textual)
        return run_reporting_errors("baize-tui", lambda: handler(args))
    from baize_tui.shutdown import termination_handlers

    with termination_handlers():  # put back afterwards: main() is also called in-process
        return run_reporting_errors("baize-tui", lambda: handler(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
