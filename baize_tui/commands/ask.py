"""``baize-tui ask``: one chat turn from the command line, streamed to stdout.

The headless twin of the chat screen: the same ChatSession, prompt fitting, stop filter and
history. ``--continue`` picks a saved conversation up where it left off; ``--show-prompt``
prints exactly what would be sent instead of generating.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from typing import TYPE_CHECKING

from baize_tui.engines.base import Engine
from baize_tui.errors import UserError

if TYPE_CHECKING:
    from baize_tui.chat_core import ChatSettings
    from baize_tui.chat_format import ResolvedFormat
    from baize_tui.engines.base import TurnStats
    from baize_tui.history import Conversation, HistoryStore

LAST = "last"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ask`` subcommand."""
    p = subparsers.add_parser(
        "ask",
        help="ask one question (or continue a conversation) and stream the reply",
        description=(
            "Send PROMPT (or - to read it from stdin) to a model and stream the reply to "
            "stdout. The exchange is saved to history unless --no-history."
        ),
    )
    p.add_argument("prompt", metavar="PROMPT", nargs="?",
                   help="the message; - reads it from stdin")
    p.add_argument(
        "-m", "--model", metavar="SPEC",
        help="PATH.gguf (llama.cpp), openai:MODEL, or hf:BASE[+LORA] "
        "(default: model.default in the config; with --continue, the conversation's model)",
    )
    p.add_argument("--lora", metavar="ADAPTER.gguf",
                   help="a GGUF LoRA adapter (baize-convert lora) applied on the GGUF model: "
                   "try a freshly trained adapter without merging (saved with the "
                   "conversation; --continue applies it again)")
    p.add_argument("--no-lora", action="store_true",
                   help="with --continue: go on without the conversation's LoRA adapter")
    p.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint for openai:MODEL")
    p.add_argument("-s", "--system", metavar="TEXT",
                   help="system prompt (default: [chat] system_prompt in the config, else the "
                   "format's: Baize's for Baize's format, none for a model's own template; "
                   "with --continue, the conversation's)")
    p.add_argument("-f", "--format", metavar="FORMAT",
                   help="chat format: auto (the model's chat template; Baize's format when it "
                   "has none), baize, or template (default: [chat] format in the config, auto)")
    p.add_argument("-t", "--temperature", type=float, metavar="T", help="sampling temperature (1.0)")
    p.add_argument("--top-p", type=float, metavar="P", help="nucleus sampling threshold (0.95)")
    p.add_argument("--top-k", type=int, metavar="K", help="top-k sampling, 0 = off (0)")
    p.add_argument("--min-p", type=float, metavar="P", help="min-p sampling, 0 = off (0)")
    p.add_argument("--repeat-penalty", type=float, metavar="R", help="1.0 = off (1.0)")
    p.add_argument("-n", "--max-tokens", type=int, metavar="N",
                   help="reply budget in tokens (512; at most a quarter of the context is "
                   "reserved for it when fitting the prompt)")
    p.add_argument("--seed", type=int, metavar="N", help="fixed seed: the same seed repeats a reply")
    p.add_argument("--n-ctx", type=int, metavar="N",
                   help="context size (default: the model's, capped by model.max_ctx)")
    p.add_argument(
        "-c", "--continue", dest="continue_id", nargs="?", const=LAST, metavar="ID",
        help="continue the last conversation, or conversation ID",
    )
    p.add_argument("--show-prompt", action="store_true",
                   help="print the exact prompt that would be sent, and do not generate")
    p.add_argument("--no-history", action="store_true", help="do not save this exchange")
    p.add_argument("--stats", action="store_true",
                   help="print token counts, time to first token and tokens/s to stderr")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="show llama.cpp's and the engines' logs on stderr")
    p.set_defaults(func=run)


def _continue_target(args: argparse.Namespace) -> int | None:
    """Which conversation ``--continue [ID]`` names: None (not continuing), -1 (the last), ID.

    ``--continue "some prompt"`` is read as continuing the last conversation with that
    prompt, since argparse hands the prompt to the optional ID.
    """
    value = args.continue_id
    if value is None:
        return None
    if value == LAST:
        return -1
    if value.isdigit() and args.prompt is not None:
        return int(value)
    if args.prompt is None:  # the "ID" was really the prompt
        args.prompt = value
        return -1
    raise UserError(f"--continue takes a conversation number, not {value!r}")


def _read_prompt(arg: str | None) -> str:
    if arg is None:
        raise UserError("no prompt: give the message as an argument, or - to read stdin")
    text = sys.stdin.read() if arg == "-" else arg
    text = text.strip()
    if not text:
        raise UserError("empty prompt: give the message as an argument or on stdin with -")
    return text


def run(args: argparse.Namespace) -> int:
    """Run one turn; returns the exit status."""
    from baize_tui.config import load_config
    from baize_tui.engines import open_engine
    from baize_tui.paths import get_paths

    if args.verbose:
        import logging

        from baize_tui.redact import RedactingFilter

        handler = logging.StreamHandler(sys.stderr)
        handler.addFilter(RedactingFilter())
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        root = logging.getLogger("baize_tui")
        root.addHandler(handler)
        root.setLevel(logging.DEBUG)
    continue_id = _continue_target(args)
    text = _read_prompt(args.prompt)
    config = load_config()
    store = None
    conversation = None
    if continue_id is not None:
        if args.no_history:
            raise UserError("--continue reads the history; it cannot be combined with --no-history")
        from baize_tui.history import HistoryStore

        store = HistoryStore()
        conv_id = continue_id
        if conv_id == -1:
            last = store.last_conversation_id()
            if last is None:
                raise UserError("no conversation to continue yet; ask without --continue first")
            conv_id = last
        conversation = store.get_conversation(conv_id)

    spec = args.model or (conversation.model if conversation else "") or config["model"]["default"]
    if not spec:
        raise UserError(
            "no model given: pass --model PATH.gguf (or openai:MODEL), or set default under "
            f"[model] in {get_paths().config_file}; make a GGUF from Baize's weights with "
            "`baize-convert merge` (see its --help)"
        )

    settings = _settings(args, config, conversation, spec)
    if conversation is not None and store is not None:
        _keep_lora(store, conversation, settings, explicit=bool(args.lora or args.no_lora))
    engine = open_engine(spec, config=config, base_url=args.base_url,
                         n_ctx=args.n_ctx or settings.n_ctx, lora=settings.lora)
    try:
        return _turn(args, text, engine, store, conversation, settings)
    finally:
        engine.close()
        if store is not None:
            store.close()


def _keep_lora(store: HistoryStore, conversation: Conversation, settings: ChatSettings, *,
               explicit: bool) -> None:
    """The LoRA adapter of a continued conversation: its stored one must still exist (else
    one clear error); ``--lora``/``--no-lora`` replace it, and the conversation keeps that."""
    from pathlib import Path

    stored = conversation.params.get("lora") or None
    if not explicit:
        if settings.lora and not Path(settings.lora).expanduser().is_file():
            raise UserError(
                f"conversation {conversation.id} was made with the LoRA adapter "
                f"{settings.lora}, which is gone; give --lora ADAPTER.gguf for another, or "
                f"--no-lora to go on with the base model")
        return
    if settings.lora != stored:
        params = {k: v for k, v in conversation.params.items() if k != "lora"}
        if settings.lora:
            params["lora"] = settings.lora
        store.update_conversation(conversation.id, params=params)


def _settings(args: argparse.Namespace, config: dict, conversation: Conversation | None,
              spec: str) -> ChatSettings:
    """The chat's settings exactly as the app resolves them (``[chat]`` defaults, or the
    conversation's), with this command's flags on top."""
    from baize_tui.chat_core import ChatSettings

    if conversation is not None:
        base = ChatSettings.from_conversation(spec, conversation.system_prompt,
                                              conversation.params)
    else:
        base = ChatSettings.from_config(config, spec)
    return base.with_overrides(
        system_prompt=args.system, fmt=args.format, n_ctx=args.n_ctx,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
        repeat_penalty=args.repeat_penalty, max_new_tokens=args.max_tokens, seed=args.seed,
        lora="" if args.no_lora else _absolute(args.lora),
    )


def _absolute(path: str | None) -> str | None:
    """An adapter path as stored with a conversation: absolute, so ``-c`` works anywhere."""
    if not path:
        return path
    from pathlib import Path

    return str(Path(path).expanduser().absolute())


def _turn(
    args: argparse.Namespace,
    text: str,
    engine: Engine,
    store: HistoryStore | None,
    conversation: Conversation | None,
    settings: ChatSettings,
) -> int:
    from baize_tui.chat_core import ChatController

    controller = ChatController(engine, store)
    resolved = controller.resolved(settings)
    if resolved.notice:
        print(f"baize-tui: {resolved.notice}", file=sys.stderr)
    session = controller.session(settings, conversation.id if conversation else None)
    params = settings.params

    if args.show_prompt:
        prepared = session.prepare(text)
        if isinstance(prepared.payload, str):
            sys.stdout.write(prepared.payload)
            if sys.stdout.isatty():
                sys.stdout.write("\n")
        else:
            # exactly what ChatSession sends, stop strings included
            body = engine.request_body(prepared.payload, params,  # type: ignore[attr-defined]
                                       session.fmt.stop_strings)
            print(json.dumps(body, ensure_ascii=False, indent=2))
        if prepared.dropped_turns:
            print(f"baize-tui: {prepared.dropped_turns} oldest turn(s) left out to fit the "
                  f"context", file=sys.stderr)
        return 0

    if store is None and not args.no_history:
        from baize_tui.history import HistoryStore

        store = HistoryStore()
    session.history = store
    controller.history = store

    cancel = threading.Event()
    turn = controller.send(settings, text, cancel, conversation_id=session.conversation_id,
                           session=session)
    if turn.dropped_turns:
        print(f"baize-tui: {turn.dropped_turns} oldest turn(s) left out to fit the context",
              file=sys.stderr)
    out = sys.stdout
    wrote = False
    from baize_tui.termtext import term_safe

    shown = term_safe if out.isatty() else str  # model output is data, not terminal commands
    try:
        for piece in turn:  # (a key the server echoes back is masked by the turn itself)
            out.write(shown(piece))
            out.flush()
            wrote = True
    except KeyboardInterrupt:
        cancel.set()
        turn.close()
        raise
    except BrokenPipeError:  # the reader went away (`| head`): stop, keep what was generated
        cancel.set()
        turn.close()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        return 141  # what a shell reports for a command ended by SIGPIPE
    if wrote or out.isatty():
        out.write("\n")
        out.flush()
    if args.stats:
        _print_stats(turn.stats, resolved, session.conversation_id)
    if turn.stats.finish_reason == "length":
        print("baize-tui: the reply was cut at the token limit (--max-tokens or the context)",
              file=sys.stderr)
    return 0


def _print_stats(stats: TurnStats, resolved: ResolvedFormat, conversation_id: int | None) -> None:
    """``--stats``: the turn's numbers, the chat format and why, and the KV cache reuse."""
    print(f"baize-tui: {stats.summary()}", file=sys.stderr)
    print(f"baize-tui: format {resolved.label}: {resolved.reason}", file=sys.stderr)
    if stats.reused_tokens is not None:
        print(f"baize-tui: KV cache reused {stats.reused_tokens} of {stats.prompt_tokens} "
              f"prompt tokens", file=sys.stderr)
    if stats.kv_note:
        print(f"baize-tui: {stats.kv_note}", file=sys.stderr)
    if conversation_id is not None:
        print(f"baize-tui: saved as conversation {conversation_id}", file=sys.stderr)
