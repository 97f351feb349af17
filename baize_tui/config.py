"""Settings from ``config.toml`` (see ``baize-tui paths``), merged over built-in defaults.

The file is TOML with tables and belongs to the user: a change (switching the theme, picking
a default model) rewrites only the key that changed, through tomlkit, so their comments,
order and formatting stay, unknown keys survive, and defaults never get written out (no empty
``api_key``). Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.paths import get_paths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

DEFAULTS: dict[str, Any] = {
    "model": {
        "default": "",  # a model spec: PATH.gguf, openai:MODEL, hf:BASE[+LORA]
        "max_ctx": 4096,  # cap on the context size taken from a GGUF
        "dirs": [],  # extra directories searched for GGUF files
    },
    "openai": {
        "base_url": "",
        "api_key": "",  # prefer OPENAI_API_KEY in the environment
    },
    "ui": {
        "theme": "textual-dark",
        "keymap": {},
        "reopen_last": True,  # open the last chat on launch
    },
}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Read the settings file (missing is fine), check it (:mod:`baize_tui.config_schema`)
    and merge it over the defaults. A bad value is reported once on stderr, naming the file,
    key, value and expected type, and replaced by its default; the other values stay."""
    path = path or get_paths().config_file
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return copy.deepcopy(DEFAULTS)
    except OSError as exc:
        from baize_tui.safe_write import describe_os_error

        raise OperationFailed(describe_os_error(path, exc, "cannot read the settings")) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); "
                        "fix or delete the file") from None
    try:
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix or delete the file") from None
    from baize_tui.config_schema import validate_config

    data, problems = validate_config(data)
    _warn_once(path, problems)
    return _merge(DEFAULTS, data)


_warned: set[str] = set()


def _warn_once(path: Path, problems: list[str]) -> None:
    """Print each settings problem once per process (commands load the config repeatedly)."""
    for problem in problems:
        line = f"baize-tui: warning: {path}: {problem}"
        if line not in _warned:
            _warned.add(line)
            print(line, file=sys.stderr)


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes, plus DEL (which TOML forbids raw) escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps_toml(data: dict[str, Any]) -> str:
    """Serialise nested dicts of scalars and lists as TOML tables."""
    lines: list[str] = []

    def emit(table: dict[str, Any], prefix: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if prefix and (scalars or not tables):
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{_toml_string(key)} = {_toml_value(value)}")
        if scalars:
            lines.append("")
        for key, value in tables.items():
            emit(value, f"{prefix}.{_toml_string(key)}" if prefix else _toml_string(key))

    emit(data, "")
    return "\n".join(lines).rstrip() + "\n"


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and a rename
    (:func:`baize_tui.safe_write.atomic_write_text`: refuses links, FIFOs and devices)."""
    from baize_tui.safe_write import atomic_write_text as write

    write(path, text)


def _document(path: Path) -> Any:
    """The settings file as a style-preserving tomlkit document (empty if missing)."""
    import tomlkit
    from tomlkit.exceptions import ParseError

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return tomlkit.document()
    try:
        return tomlkit.parse(text)
    except ParseError as exc:
        raise UserError(f"{path}: not valid TOML ({exc}); fix or delete the file") from None


def _apply(node: Any, data: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Write into ``node`` each value of ``data`` that the file already has or that differs
    from ``defaults``; tables are created only when something goes in them."""
    import tomlkit

    for key, value in data.items():
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if isinstance(value, dict) and not (key in node and not isinstance(node[key], dict)):
            child = node[key] if key in node else tomlkit.table()
            _apply(child, value, default if isinstance(default, dict) else {})
            if key not in node and len(child):
                node[key] = child
        elif key in node or value != default:
            node[key] = value


def save_config(config: dict[str, Any], path: Path | None = None) -> Path:
    """Write the settings atomically, keeping the file's comments and layout: only values the
    file already has or that differ from the defaults are written. Returns the file."""
    import tomlkit

    path = path or get_paths().config_file
    doc = _document(path)
    _apply(doc, config, DEFAULTS)
    atomic_write_text(path, tomlkit.dumps(doc))
    return path


def set_value(dotted_key: str, value: Any, path: Path | None = None) -> dict[str, Any]:
    """Set one setting (``"model.default"``) and save, changing nothing else in the file;
    returns the new settings."""
    import tomlkit

    path = path or get_paths().config_file
    load_config(path)  # one clear error for a broken file
    doc = _document(path)
    node = doc
    *parents, leaf = dotted_key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = tomlkit.table()
        node = node[part]
    node[leaf] = value
    atomic_write_text(path, tomlkit.dumps(doc))
    return load_config(path)
