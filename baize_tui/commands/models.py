"""``baize-tui models``: list GGUF models on disk, pull one from the hub, remove one, pick
the default (the same functions the TUI models screen calls, in ``baize_tui.models``)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

from baize_tui.formatting import human_bytes
from baize_tui.termtext import echo, term_safe


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` subcommand and its actions."""
    p = subparsers.add_parser(
        "models",
        help="list, download, remove and choose GGUF models",
        description=(
            "GGUF models in the models directory (`baize-tui paths models`), in config "
            "[model] dirs and in the Hugging Face cache. Without an action, lists them."
        ),
    )
    p.set_defaults(func=run_list, json=False, no_hf_cache=False)
    actions = p.add_subparsers(dest="action", metavar="ACTION")

    a = actions.add_parser("list", help="every GGUF found, with quant, context and template")
    a.add_argument("--json", action="store_true", help="print a JSON list")
    a.add_argument("--no-hf-cache", action="store_true",
                   help="do not look in the Hugging Face cache")
    a.set_defaults(func=run_list)

    a = actions.add_parser(
        "pull",
        help="download a GGUF from the hub (or build one for a known Baize model)",
        description=(
            "Download one GGUF file from a Hugging Face repo into the models directory "
            "(resumable, checksum-verified). For the released Baize models, which exist only "
            "as LoRA adapters or HF weights (e.g. project-baize/baize-lora-7B, "
            "project-baize/baize-v2-7b), download base and adapter and convert them with "
            "baize-convert, after showing the disk space and time needed."
        ),
    )
    a.add_argument("repo", help="hub repo id, e.g. project-baize/baize-lora-7B")
    a.add_argument("file", nargs="?", help="the .gguf file in the repo (default: pick by --quant)")
    a.add_argument("--quant", "-q", metavar="TYPE",
                   help="quant type: picks the file in a GGUF repo; the output type of a "
                        "conversion (default q4_k_m; q4 = q4_k_m)")
    a.add_argument("--revision", default="main", help="branch, tag or commit (default main)")
    a.add_argument("--yes", "-y", action="store_true", help="start a conversion without asking")
    a.add_argument("--force", action="store_true", help="replace an existing file")
    a.set_defaults(func=run_pull)

    a = actions.add_parser("rm", help="delete a GGUF from the models directory")
    a.add_argument("name", help="file name (with or without .gguf) or path")
    a.set_defaults(func=run_rm)

    a = actions.add_parser("default", help="show or set the model chat uses by default")
    a.add_argument("name", nargs="?", help="file name (with or without .gguf) or path")
    a.set_defaults(func=run_default)




def run_list(args: argparse.Namespace) -> int:
    """Print the models (a table, or JSON)."""
    from baize_tui.models import check_vocabularies, list_models
    from baize_tui.paths import get_paths

    found = check_vocabularies(list_models(include_hf_cache=not args.no_hf_cache))
    if args.json:
        print(json.dumps([m.to_dict() for m in found], indent=2, ensure_ascii=False))
        return 0
    if not found:
        print(f"no GGUF models found (models directory: {get_paths().models_dir}); get one with "
              "`baize-tui models pull REPO`, e.g. project-baize/baize-lora-7B --quant q4")
        return 0
    rows: list[tuple[str, ...]] = [("", "NAME", "QUANT", "CTX", "ARCH", "SIZE", "TEMPLATE",
                                    "SOURCE")]
    for m in found:
        if m.broken:
            rows.append(("!", m.name, "BROKEN", "", "", human_bytes(m.size), "", m.source))
            continue
        template = "baize" if m.baize_template else ("yes" if m.has_chat_template else "no")
        rows.append(("*" if m.is_default else "", m.name,
                     (m.quant or "?") if m.kind == "model" else f"lora {m.quant}",
                     str(m.context_length or "?"), m.architecture or "?", human_bytes(m.size),
                     template, m.source))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(term_safe("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
                        .rstrip(), keep_newlines=False))  # names come from file headers
    for m in found:
        if m.broken:
            print(term_safe(f"! {m.path}: {m.error}", keep_newlines=False))
    if any(m.is_default for m in found):
        print("* default model")
    return 0


class _RichProgress:
    """``progress(stage, done, total)`` drawn as rich bars on stderr, one per stage."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), transient=False)
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> _RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage.startswith("convert"):
            return  # baize-convert draws its own bar
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)


def _confirm(args: argparse.Namespace) -> None:
    from baize_tui.errors import UserError

    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UserError("this pull converts a model (see above); pass --yes to start it")
    answer = input("Start? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise UserError("cancelled; nothing was downloaded")


def run_pull(args: argparse.Namespace) -> int:
    """Download a GGUF, or run a known Baize model's recipe."""
    from baize_tui import models
    from baize_tui.catalog import find_known
    from baize_tui.model_checks import check_hub_names

    check_hub_names(args.repo, args.file)
    if args.file is None and find_known(args.repo) is not None:
        plan = models.plan_recipe(args.repo, args.quant)
        echo(plan.describe())
        _confirm(args)
        with _RichProgress() as bars:
            # run_merge draws its own bar after the downloads; stop ours before it starts
            def progress(stage: str, done: int, total: int | None) -> None:
                if stage.startswith("convert") and bars.progress.live.is_started:
                    bars.progress.stop()
                bars(stage, done, total)

            path = models.run_recipe(plan, progress=progress, quiet=False, force=args.force)
    else:
        with _RichProgress() as bars:
            path = models.pull(args.repo, args.file, quant=args.quant, revision=args.revision,
                               progress=bars, force=args.force)
    echo(f"saved {path}")
    echo(f"chat with it: baize-tui ask --model {shlex.quote(str(path))} 'Hello'  "
         f"(or make it the default: baize-tui models default {shlex.quote(path.name)})")
    return 0


def run_rm(args: argparse.Namespace) -> int:
    """Delete a model file."""
    from baize_tui.models import find_model, remove_model

    found = find_model(args.name).path
    target = found.resolve() if found.is_symlink() else None
    model = remove_model(args.name)
    note = " (it was the default; none is set now)" if model.is_default else ""
    if target is not None:
        note += f" (a symbolic link; its target {target} was kept)"
    echo(f"removed {model.path}{note}")
    return 0


def run_default(args: argparse.Namespace) -> int:
    """Show or set ``model.default``."""
    from baize_tui.models import default_model, set_default

    if args.name is None:
        current = default_model()
        echo(current or "no default model; set one with `baize-tui models default NAME`")
        return 0
    model = set_default(args.name)
    echo(f"default model: {model.path}")
    return 0
