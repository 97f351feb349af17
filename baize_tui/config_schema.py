"""The shape of ``config.toml``: every known key, its type and range, checked in one place.

:func:`validate_config` takes what TOML parsed and returns a cleaned copy plus one message
per problem. A message names the key, the bad value and what was expected
(``[chat] temperature = "hot": expected a number >= 0``). A bad value is dropped on its own
(the built-in default applies), so one bad key never discards the good ones next to it;
unknown keys and tables are kept untouched (a newer version's settings survive).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """How one key is checked: a predicate and the words for what it expects."""

    check: Callable[[Any], bool]
    expected: str


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _int_at_least(low: int) -> Rule:
    return Rule(lambda v: _is_int(v) and low <= v < 2**63, f"an integer >= {low}")


def _num_between(low: float, high: float | None, *, open_low: bool = False) -> Rule:
    def check(v: Any) -> bool:
        if not _is_num(v):
            return False
        above = v > low if open_low else v >= low
        return above and (high is None or v <= high)

    if high is None:
        return Rule(check, f"a number {'>' if open_low else '>='} {low:g}")
    return Rule(check, f"a number from {low:g} to {high:g}")


STRING = Rule(lambda v: isinstance(v, str), "a string")
STRING_LIST = Rule(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                   "a list of strings")
STRING_TABLE = Rule(lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
                    "a table of strings")
TABLE = Rule(lambda v: isinstance(v, dict), "a table")

#: table -> key -> rule (keys not listed here are kept as they are)
SCHEMA: dict[str, dict[str, Rule]] = {
    "model": {"default": STRING, "max_ctx": _int_at_least(1), "dirs": STRING_LIST},
    "openai": {"base_url": STRING, "api_key": STRING, "n_ctx": _int_at_least(0),
               "models": STRING_LIST},
    "ui": {"theme": STRING, "keymap": STRING_TABLE},
    "chat": {
        "system_prompt": STRING,
        "n_ctx": _int_at_least(1),
        "temperature": _num_between(0, None),
        "top_p": _num_between(0, 1),
        "top_k": _int_at_least(0),
        "min_p": _num_between(0, 1),
        "repeat_penalty": _num_between(0, None, open_low=True),
        "max_new_tokens": _int_at_least(1),
        "seed": _int_at_least(0),
    },
    "selfchat": {"prices": TABLE},
}


def show_value(value: Any, limit: int = 40) -> str:
    """A short TOML-ish rendering of a bad value for a message."""
    if isinstance(value, str):
        text = '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = f"a list of {len(value)}"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``data`` without the values that break :data:`SCHEMA`, and the problems."""
    clean: dict[str, Any] = {}
    problems: list[str] = []
    for name, value in data.items():
        rules = SCHEMA.get(name)
        if rules is None:
            clean[name] = value
            continue
        if not isinstance(value, dict):
            problems.append(f"{name} = {show_value(value)}: expected a table [{name}]; "
                            "its defaults are used")
            continue
        table: dict[str, Any] = {}
        for key, item in value.items():
            rule = rules.get(key)
            if rule is None or rule.check(item):
                table[key] = item
            else:
                problems.append(f"[{name}] {key} = {show_value(item)}: expected {rule.expected}; "
                                "the default is used")
        clean[name] = table
    return clean, problems
