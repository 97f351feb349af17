"""Seed questions for self-chat: files (text, JSONL, JSON, CSV) or the Baize presets.

Seeds are normalised (whitespace collapsed), exact-deduplicated, optionally shuffled with a
seed, sharded (``i/n`` keeps every n-th seed from offset i of the shuffled order, so shards of
one command line partition the seeds) and limited, before any request costs money.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError

# name -> (HF dataset, split, field path); BAIZE.md §3.
PRESETS: dict[str, tuple[str, str, str]] = {
    "quora": ("quora", "train", "questions.text.0"),
    "stackoverflow": ("pacovaldez/stackoverflow-questions", "train", "title"),
    "medquad": ("AnonymousSub/MedQuAD_47441_Question_Answer_Pairs", "train", "Questions"),
}

_GUESS_FIELDS = ("seed", "question", "prompt", "text", "topic", "title", "instruction")


@dataclass(frozen=True)
class Seed:
    """One seed question with its stable id (a hash of the normalised text)."""

    id: str
    text: str


def normalise(text: str) -> str:
    """Collapse whitespace; the form seeds are compared and hashed in."""
    return " ".join(text.split())


def seed_id(text: str) -> str:
    """The stable id of a seed: 16 hex digits of SHA-256 over its normalised text."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def get_field(record: Any, path: str) -> Any:
    """``record`` at a dotted path (``questions.text.0``; digits index lists)."""
    node = record
    for part in path.split("."):
        if isinstance(node, dict):
            if part not in node:
                raise KeyError(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.lstrip("-").isdigit():
            node = node[int(part)]
        else:
            raise KeyError(part)
    return node


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; ``None`` stays ``None``."""
    if spec is None:
        return None
    try:
        i_text, n_text = spec.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise UserError(f"--shard {spec!r}: expected i/n, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {spec!r}: need 0 <= i < n")
    return i, n


def _pick(record: Any, field: str | None, where: str) -> Any:
    if isinstance(record, str) and field is None:
        return record
    if field is None:
        if isinstance(record, dict):
            strings = [k for k, v in record.items() if isinstance(v, str)]
            for guess in _GUESS_FIELDS:
                if guess in strings:
                    return record[guess]
            if len(strings) == 1:
                return record[strings[0]]
            raise UserError(f"{where}: records have several fields ({', '.join(record)}); "
                            "choose one with --seed-field")
        raise UserError(f"{where}: records are {type(record).__name__}, not text; "
                        "choose a field with --seed-field")
    try:
        return get_field(record, field)
    except (KeyError, IndexError, TypeError):
        keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
        raise UserError(f"{where}: no field {field!r} (record has: {keys})") from None


def _texts_from_records(records: Iterable[Any], field: str | None, where: str) -> Iterator[str]:
    for n, record in enumerate(records, 1):
        value = _pick(record, field, f"{where} record {n}")
        if value is None:
            continue
        if not isinstance(value, str):
            value = str(value)
        yield value


def _read_jsonl(path: Path, field: str | None) -> list[str]:
    records = []
    with path.open(encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise UserError(f"{path}:{n}: not valid JSON ({exc})") from None
    return list(_texts_from_records(records, field, str(path)))


def _read_json(path: Path, field: str | None) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise UserError(f"{path}: expected a JSON array (or an object with one array)")
        data = data[lists[0]]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON array of strings or objects")
    return list(_texts_from_records(data, field, str(path)))


def _read_csv(path: Path, field: str | None) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        if not columns:
            return []
        if field is None:
            guesses = [c for c in _GUESS_FIELDS if c in columns]
            if len(columns) == 1:
                field = columns[0]
            elif guesses:
                field = guesses[0]
            else:
                raise UserError(f"{path}: several columns ({', '.join(columns)}); "
                                "choose one with --seed-field")
        if field not in columns:
            raise UserError(f"{path}: no column {field!r} (columns: {', '.join(columns)})")
        return [row[field] or "" for row in reader]


def _read_text(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8-sig").splitlines()


def load_preset(name: str, field: str | None = None) -> list[str]:
    """Seeds from a Baize preset on the Hugging Face hub (needs ``datasets`` and network)."""
    dataset_name, split, default_field = PRESETS[name]
    try:
        import datasets
    except ImportError:
        raise UserError(f"the {name!r} preset needs the datasets package: "
                        "pip install datasets (or the train extra), or pass a seed file") from None
    try:
        ds = datasets.load_dataset(dataset_name, split=split)
    except Exception as exc:  # the hub is unreachable, offline mode, dataset gone, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OperationFailed(
            f"could not load the {name!r} seeds ({dataset_name}) from the Hugging Face hub: "
            f"{first[:200]}. Check the network (HF_ENDPOINT, HF_HUB_OFFLINE) or download the "
            "questions and pass them as a file with --seeds") from None
    return list(_texts_from_records(ds, field or default_field, dataset_name))


def read_seed_texts(source: str, field: str | None = None) -> list[str]:
    """Raw seed strings from a file path or preset name, in file order."""
    if source in PRESETS and not Path(source).exists():
        return load_preset(source, field)
    path = Path(source).expanduser()
    if not path.exists():
        presets = ", ".join(PRESETS)
        raise UserError(f"{path}: seed file not found (or use a preset: {presets})")
    if path.is_dir():
        raise UserError(f"{path}: is a directory; pass a .txt, .jsonl, .json or .csv file")
    from baize_tui.safe_write import ensure_regular_input

    ensure_regular_input(path, "seed file", "write the seeds to a .txt, .jsonl, .json or .csv "
                         "file first")
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            return _read_jsonl(path, field)
        if suffix == ".json":
            return _read_json(path, field)
        if suffix in (".csv", ".tsv"):
            return _read_csv(path, field)
        if suffix == ".parquet":
            raise UserError(f"{path}: Parquet is not read directly; convert it to JSONL or CSV")
        return _read_text(path)
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None


def prepare_seeds(texts: Iterable[str], *, shuffle: int | None = None,
                  shard: tuple[int, int] | None = None, limit: int | None = None) -> list[Seed]:
    """Normalise, drop empties and exact duplicates, shuffle, shard, then limit."""
    seen: set[str] = set()
    seeds: list[Seed] = []
    for text in texts:
        norm = normalise(text)
        if not norm:
            continue
        sid = seed_id(norm)
        if sid in seen:
            continue
        seen.add(sid)
        seeds.append(Seed(sid, norm))
    if shuffle is not None:
        random.Random(shuffle).shuffle(seeds)
    if shard is not None:
        i, n = shard
        seeds = seeds[i::n]
    if limit is not None:
        seeds = seeds[: max(0, limit)]
    return seeds


def load_seeds(source: str, *, field: str | None = None, shuffle: int | None = None,
               shard: str | tuple[int, int] | None = None, limit: int | None = None) -> list[Seed]:
    """Read, normalise, deduplicate, shuffle, shard and limit seeds from ``source``."""
    shard_t = parse_shard(shard) if isinstance(shard, str) else shard
    return prepare_seeds(read_seed_texts(source, field), shuffle=shuffle, shard=shard_t,
                         limit=limit)
