"""Training dialogues: read them from files, and split them into training and validation sets.

Accepted files (the format is detected per record, so files may be mixed):

- Baize's released JSON: an array of ``{"topic", "input"}`` where ``input`` is
  ``"The conversation between human and AI assistant.\\n[|Human|] …\\n[|AI|] …\\n[|Human|] "``;
  ``baize-tui selfchat export --format baize`` writes the same.
- Chat messages: JSONL (or a JSON array) of ``{"messages": [{"role", "content"}, …]}`` with
  roles ``system`` (optional, first), ``user``, ``assistant``; ``selfchat export --format
  messages`` writes this.

Rendering, tokenizing and label masking are in :mod:`baize_tui.train.data`, which re-exports
every name defined here.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.prompt import AI_TAG, HUMAN_TAG

DEFAULT_VAL_MAX = 2000
DEFAULT_VAL_FRACTION = 0.05


@dataclass
class Dialogue:
    """One training dialogue: complete (human, AI) turns, an optional system prompt, its origin."""

    turns: list[tuple[str, str]]
    system: str | None = None
    source: str = ""


@dataclass
class LoadedData:
    """Dialogues read from one or more files, with what was skipped and why."""

    dialogues: list[Dialogue] = field(default_factory=list)
    per_file: dict[str, int] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)
    examples_of_drops: list[str] = field(default_factory=list)

    def drop(self, reason: str, where: str) -> None:
        """Count a skipped record (and remember a few places for the message)."""
        self.dropped[reason] += 1
        if len(self.examples_of_drops) < 5:
            self.examples_of_drops.append(f"{where}: {reason}")


# -- reading ---------------------------------------------------------------------------------


def parse_baize_input(text: str) -> list[tuple[str, str]]:
    """The (human, AI) turns of a released-format ``input`` string.

    Like ``preprocess.py`` in reverse: the part before the first ``[|Human|]`` is the header,
    each later chunk must split into exactly two parts on ``[|AI|]``; parsing stops at the
    first chunk that does not (the trailing ``[|Human|] `` yields an empty chunk).
    """
    turns: list[tuple[str, str]] = []
    for chunk in text.split(HUMAN_TAG)[1:]:
        parts = chunk.split(AI_TAG)
        if len(parts) != 2:
            break
        human, ai = parts[0].strip(), parts[1].strip()
        if not human or not ai:
            break
        turns.append((human, ai))
    return turns


def _dialogue_from_messages(messages: Any, where: str, out: LoadedData) -> Dialogue | None:
    if not isinstance(messages, list):
        raise UserError(f"{where}: \"messages\" must be a list of {{\"role\", \"content\"}} objects")
    system: str | None = None
    turns: list[tuple[str, str]] = []
    pending: str | None = None
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) \
                or not isinstance(msg.get("content"), str):
            raise UserError(f"{where}: messages[{i}] must be an object with string \"role\" and "
                            "\"content\"")
        role, content = msg["role"], msg["content"].strip()
        if role == "system" and i == 0:
            system = content
        elif role == "user" and pending is None:
            pending = content
        elif role == "assistant" and pending is not None:
            if not pending or not content:
                break
            turns.append((pending, content))
            pending = None
        else:
            out.drop(f"messages[{i}] is {role!r} where a "
                     f"{'user' if pending is None else 'assistant'} message belongs", where)
            return None
    return Dialogue(turns, system, where)


def _dialogue_from_record(record: Any, where: str, out: LoadedData) -> Dialogue | None:
    if isinstance(record, dict) and "messages" in record:
        return _dialogue_from_messages(record["messages"], where, out)
    if isinstance(record, dict) and isinstance(record.get("input"), str):
        return Dialogue(parse_baize_input(record["input"]), None, where)
    keys = sorted(record)[:6] if isinstance(record, dict) else type(record).__name__
    raise UserError(
        f"{where}: unknown data format: expected Baize's {{\"topic\", \"input\"}} or chat "
        f"{{\"messages\": [...]}} records, got {keys}"
    )


def _iter_json_array(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, element) for each element of a JSON array, without losing positions."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)

    def skip_ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{text.count(chr(10), 0, exc.pos) + 1}: not valid JSON "
                            f"({exc.msg})") from None
        yield line, value
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos = skip_ws(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            if skip_ws(pos + 1) != n:
                raise UserError(f"{path}:{text.count(chr(10), 0, pos) + 1}: text after the JSON array")
            return
        raise UserError(f"{path}:{text.count(chr(10), 0, pos) + 1}: not valid JSON (expected "
                        "',' or ']' in the array)")


def read_file(path: Path | str, out: LoadedData | None = None) -> LoadedData:
    """Add the dialogues of one file to ``out`` (a new :class:`LoadedData` if not given)."""
    out = out if out is not None else LoadedData()
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such data file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory; give the exported .json/.jsonl file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); expected JSON or JSONL") from None
    except OSError as exc:
        raise OperationFailed(f"{path}: cannot read ({exc.strerror or exc})") from None
    before = len(out.dialogues)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped.startswith("["):
        records: Iterator[tuple[int, Any]] = _iter_json_array(text, path)
    elif stripped.startswith("{") or not stripped:
        records = _iter_jsonl(text, path)
    else:
        line = text.count("\n", 0, len(text) - len(stripped)) + 1
        raise UserError(f"{path}:{line}: unknown data format: expected a JSON array or JSON "
                        "lines (Baize {\"topic\", \"input\"} or chat {\"messages\": [...]})")
    for line, record in records:
        where = f"{path}:{line}"
        dialogue = _dialogue_from_record(record, where, out)
        if dialogue is None:
            continue
        if not dialogue.turns:
            out.drop("no complete human/AI turn", where)
            continue
        out.dialogues.append(dialogue)
    out.per_file[str(path)] = len(out.dialogues) - before
    return out


def _iter_jsonl(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip().lstrip("\ufeff")
        if not line:
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg}); expected one JSON "
                            "object per line") from None


def load_dialogues(paths: Sequence[Path | str]) -> LoadedData:
    """Read every file; raise :class:`UserError` when no dialogue is left."""
    if not paths:
        raise UserError("no training data: give --data FILE")
    out = LoadedData()
    for path in paths:
        read_file(path, out)
    if not out.dialogues:
        detail = "; ".join(out.examples_of_drops[:3])
        raise UserError(f"empty dataset: no dialogue with a complete human/AI turn in "
                        f"{', '.join(str(p) for p in paths)}" + (f" ({detail})" if detail else ""))
    return out


def resolve_val_size(n: int, val_size: float | None) -> int:
    """How many dialogues to hold out: ``None`` means min(2000, 5%)."""
    if val_size is None:
        count = min(DEFAULT_VAL_MAX, int(n * DEFAULT_VAL_FRACTION))
    elif val_size < 1:
        count = int(n * val_size)
    else:
        count = int(val_size)
    if count >= n:
        raise UserError(f"--val-size {val_size:g} leaves no training data ({n} dialogues in all)")
    return count


def split_dialogues(dialogues: Sequence[Dialogue], val_size: float | None,
                    seed: int) -> tuple[list[Dialogue], list[Dialogue]]:
    """Shuffle with ``seed`` (the same files and seed always give the same order), then split."""
    order = list(dialogues)
    random.Random(seed).shuffle(order)
    n_val = resolve_val_size(len(order), val_size)
    return order[n_val:], order[:n_val]
