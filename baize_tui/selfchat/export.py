"""Export a run's finished dialogues.

``baize``
    the released files' format: a JSON array of ``{"topic": seed, "input": text}`` where
    ``input`` follows ``preprocess.py`` (BAIZE.md §3), written with ``json.dump``'s defaults
    like the original, so the bytes match. Dialogues that yield no turn are left out.
``messages``
    chat JSONL, one ``{"messages": [{"role": "user"|"assistant", "content": ...}, ...]}`` per
    dialogue, with the same turns as the baize export.

Both drop a v1 transcript's last chunk like ``preprocess.py`` (it is usually a closing
"thanks" or a turn cut off mid-way) unless ``keep_last_turn``. A v2 transcript is built from
complete, separately generated turns, so nothing is dropped from it.
Files are written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed, UserError
from baize_tui.selfchat.store import RunStore
from baize_tui.selfchat.transcript import baize_turns, messages_from_turns, render_baize

FORMATS = ("baize", "messages")


@dataclass
class ExportResult:
    """What an export wrote."""

    path: Path
    written: int
    skipped: int
    warnings: list[str] = field(default_factory=list)  # damaged raw.jsonl lines left out


def record_turns(record: dict[str, Any], *, keep_last_turn: bool = False) -> list[tuple[str, str]]:
    """The exported turns of one raw.jsonl record (preprocess rules on its transcript)."""
    complete = keep_last_turn or record.get("mode") == "v2"
    return baize_turns(record.get("transcript") or "", keep_last_turn=complete)


def baize_items(records: Iterable[dict[str, Any]], *, keep_last_turn: bool = False) -> list[dict[str, str]]:
    """``[{"topic", "input"}]`` for the records that yield at least one turn."""
    items = []
    for rec in records:
        text = render_baize(record_turns(rec, keep_last_turn=keep_last_turn))
        if text:
            items.append({"topic": rec.get("seed", ""), "input": text})
    return items


def messages_lines(records: Iterable[dict[str, Any]], *, keep_last_turn: bool = False) -> list[str]:
    """One JSON line per record that yields at least one turn."""
    lines = []
    for rec in records:
        turns = record_turns(rec, keep_last_turn=keep_last_turn)
        if turns:
            lines.append(json.dumps({"messages": messages_from_turns(turns)}, ensure_ascii=False))
    return lines


def export_run(run_dir: Path | str, fmt: str, output: Path | str, *,
               keep_last_turn: bool = False) -> ExportResult:
    """Write the finished dialogues of ``run_dir`` to ``output`` in ``fmt``."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    run_dir = Path(run_dir)
    if not (run_dir / "raw.jsonl").exists() and not (run_dir / "state.json").exists():
        raise UserError(f"{run_dir}: not a self-chat run directory (no raw.jsonl or state.json)")
    store = RunStore(run_dir, create=False, readonly=True)
    records = list(store.unique_done())
    output = Path(output).expanduser()
    if output.is_dir():
        raise UserError(f"{output}: is a directory; give a file name with -o")
    if fmt == "baize":
        items = baize_items(records, keep_last_turn=keep_last_turn)
        text = json.dumps(items)
        written = len(items)
    else:
        lines = messages_lines(records, keep_last_turn=keep_last_turn)
        text = "".join(line + "\n" for line in lines)
        written = len(lines)
    try:
        atomic_write_text(output, text)
    except OSError as exc:
        raise OperationFailed(f"{output}: cannot write ({exc.strerror or exc})") from None
    damaged = [w for w in store.warnings if w.startswith(store.raw_path.name)]
    return ExportResult(output, written, len(records) - written, damaged)
