"""``baize-tui history``: list, show, search, export, import, rename, archive and delete
saved conversations (the same store the chat app and ``ask`` write to)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from baize_tui.commands.argtypes import positive_int
from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed, UserError
from baize_tui.history import HistoryStore, ImportFormatError, format_time
from baize_tui.termtext import term_safe


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``history`` subcommand and its actions."""
    p = subparsers.add_parser(
        "history",
        help="list, search, show, export and import saved conversations",
        description=(
            "Saved conversations (see `baize-tui paths history` for the database). "
            "Without an action, lists them."
        ),
    )
    p.set_defaults(func=run_list, json=False, all=False, limit=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    a = actions.add_parser("list", help="conversations, newest first")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    a.add_argument("--all", action="store_true", help="include archived conversations")
    a.add_argument("--limit", type=positive_int, metavar="N", help="show at most N conversations")
    a.set_defaults(func=run_list)

    a = actions.add_parser("show", help="print a conversation's current thread as Markdown")
    a.add_argument("id", type=positive_int, help="conversation id (see `history list`)")
    a.set_defaults(func=run_show)

    a = actions.add_parser("search", help="full-text search over every message")
    a.add_argument("query", help="words that must all occur (the last one may be a prefix)")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    a.add_argument("--limit", type=positive_int, default=50, metavar="N", help="at most N hits (50)")
    a.add_argument("--raw", action="store_true", help="QUERY is SQLite FTS5 query syntax")
    a.set_defaults(func=run_search)

    a = actions.add_parser("export", help="write a conversation as Markdown or JSON")
    a.add_argument("id", type=positive_int, help="conversation id")
    a.add_argument(
        "--format",
        choices=("md", "json"),
        default="json",
        help="json: the whole tree, every field, re-importable (default); md: the current thread",
    )
    a.add_argument("-o", "--output", type=Path, metavar="FILE", help="write here (default: stdout)")
    a.set_defaults(func=run_export)

    a = actions.add_parser("import", help="add a conversation from a JSON export")
    a.add_argument("file", help="a file written by `history export --format json` (- for stdin)")
    a.set_defaults(func=run_import)

    a = actions.add_parser("delete", help="delete a conversation and all its messages")
    a.add_argument("id", type=positive_int, help="conversation id")
    a.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    a.set_defaults(func=run_delete)

    a = actions.add_parser("rename", help="set a conversation's title")
    a.add_argument("id", type=positive_int, help="conversation id")
    a.add_argument("title", help="the new title")
    a.set_defaults(func=run_rename)

    a = actions.add_parser("archive", help="hide a conversation from the default list")
    a.add_argument("id", type=positive_int, help="conversation id")
    a.set_defaults(func=run_archive, archived=True)

    a = actions.add_parser("unarchive", help="restore an archived conversation")
    a.add_argument("id", type=positive_int, help="conversation id")
    a.set_defaults(func=run_archive, archived=False)


def _store() -> HistoryStore:
    return HistoryStore()


def _one_line(text: str | None) -> str:
    return term_safe(" ".join((text or "").split()))


def run_list(args: argparse.Namespace) -> int:
    """Print conversations newest first (archived ones too with ``--all``)."""
    with _store() as store:
        rows = store.list_conversations(include_archived=args.all, limit=args.limit)
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no conversations yet", file=sys.stderr)
        return 0
    width = max(len(str(r.id)) for r in rows)
    for r in rows:
        flag = "  [archived]" if r.archived else ""
        print(
            f"{r.id:>{width}}  {format_time(r.updated_at)}  {r.message_count:>4} msg  "
            f"{_one_line(r.display_title)}{flag}"
        )
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print a conversation's current thread as Markdown."""
    with _store() as store:
        sys.stdout.write(term_safe(store.export_markdown(args.id)))
    return 0


def run_search(args: argparse.Namespace) -> int:
    """Print the messages matching a full-text query."""
    with _store() as store:
        hits = store.search(args.query, limit=args.limit, raw=args.raw)
    if args.json:
        print(json.dumps([asdict(h) for h in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print(f"no messages match {term_safe(repr(args.query))}", file=sys.stderr)
        return 0
    for h in hits:
        title = _one_line(h.title) or "New conversation"
        print(f"{h.conversation_id}:{h.message_id}  {title}  ({h.role})")
        print(f"    {_one_line(h.snippet)}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write one conversation as JSON (lossless) or Markdown (current thread)."""
    with _store() as store:
        if args.format == "json":
            text = json.dumps(store.export_json(args.id), indent=2, ensure_ascii=False) + "\n"
        else:
            text = store.export_markdown(args.id)
    if args.output is None:  # JSON escapes controls itself; Markdown on a terminal must not
        sys.stdout.write(term_safe(text) if sys.stdout.isatty() else text)
        return 0
    try:
        atomic_write_text(args.output, text)
    except OSError as exc:
        raise OperationFailed(f"{args.output}: cannot write ({exc.strerror or exc})") from exc
    print(f"wrote conversation {args.id} to {args.output}", file=sys.stderr)
    return 0


def run_import(args: argparse.Namespace) -> int:
    """Store a JSON export as a new conversation; prints the new id."""
    name = "<stdin>" if args.file == "-" else args.file
    try:
        text = _read_import(args.file)
    except FileNotFoundError:
        raise UserError(f"{name}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{name}: cannot read ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{name}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise UserError(f"{name}: JSON nested too deeply to be a conversation export") from None
    with _store() as store:
        try:
            new_id = store.import_json(data)
        except ImportFormatError as exc:
            raise UserError(f"{name}: {exc}") from None
        title = store.get_conversation(new_id).display_title
    print(new_id)
    print(f"imported {name} as conversation {new_id}: {_one_line(title)}", file=sys.stderr)
    return 0


def _read_import(file: str) -> str:
    """The import document's text, refusing sizes no export reaches before reading them."""
    from baize_tui.history_guard import MAX_IMPORT_BYTES

    if file == "-":
        text = sys.stdin.read(MAX_IMPORT_BYTES + 1)
    else:
        path = Path(file)
        if path.exists() and not path.is_file():
            raise UserError(f"{file}: not a regular file")
        with path.open("rb") as fh:
            data = fh.read(MAX_IMPORT_BYTES + 1)
        text = data.decode("utf-8")
    if len(text) > MAX_IMPORT_BYTES:
        raise UserError(f"{'<stdin>' if file == '-' else file}: larger than "
                        f"{MAX_IMPORT_BYTES // 2**20} MiB; not a conversation export")
    return text


def run_delete(args: argparse.Namespace) -> int:
    """Delete a conversation, after confirmation unless ``--yes``."""
    with _store() as store:
        conversation = store.get_conversation(args.id)  # unknown id: clear error first
        if not args.yes:
            if not sys.stdin.isatty():
                raise UserError(
                    f"refusing to delete conversation {args.id} without --yes "
                    "(no terminal to ask for confirmation)"
                )
            count = len(store.messages(args.id))
            answer = input(
                f"Delete conversation {args.id} {term_safe(repr(conversation.display_title))} "
                f"({count} messages)? [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("not deleted", file=sys.stderr)
                return 1
        store.delete_conversation(args.id)
    print(f"deleted conversation {args.id}", file=sys.stderr)
    return 0


def run_rename(args: argparse.Namespace) -> int:
    """Set a conversation's title."""
    with _store() as store:
        store.rename(args.id, args.title)
    return 0


def run_archive(args: argparse.Namespace) -> int:
    """Archive or restore a conversation."""
    with _store() as store:
        store.set_archived(args.id, args.archived)
    return 0
