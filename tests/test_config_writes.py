"""config.toml belongs to the user: a change rewrites only its key, through tomlkit."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from baize_tui.config import DEFAULTS, load_config, save_config, set_value
from baize_tui.errors import UserError
from baize_tui.paths import get_paths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

USER_FILE = """\
# my settings — keep this comment
[model]
default = "/models/baize.gguf"   # the one I use
dirs = ["/data/ggufs"]

[future]  # a table a newer version knows
knob = 3
"""


def test_set_value_changes_one_key_and_keeps_the_rest(baize_home: Path) -> None:
    path = get_paths().config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(USER_FILE, encoding="utf-8")
    config = set_value("ui.theme", "nord")
    assert config["ui"]["theme"] == "nord"
    text = path.read_text(encoding="utf-8")
    assert text.startswith(USER_FILE)  # comments, order, spacing and unknown keys untouched
    assert tomllib.loads(text) == {
        "model": {"default": "/models/baize.gguf", "dirs": ["/data/ggufs"]},
        "future": {"knob": 3}, "ui": {"theme": "nord"}}
    assert "api_key" not in text and "max_ctx" not in text  # no defaults written out
    set_value("model.default", "/models/other.gguf")
    text = path.read_text(encoding="utf-8")
    assert 'default = "/models/other.gguf"   # the one I use' in text
    assert load_config()["model"]["dirs"] == ["/data/ggufs"]


def test_first_write_holds_only_what_was_set(baize_home: Path) -> None:
    set_value("chat.max_new_tokens", 24)
    assert tomllib.loads(get_paths().config_file.read_text()) == {"chat": {"max_new_tokens": 24}}


def test_save_config_writes_only_changes_from_the_defaults(baize_home: Path) -> None:
    path = get_paths().config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# top\n[ui]\ntheme = \"nord\"  # mine\n", encoding="utf-8")
    config = load_config()
    config["model"]["max_ctx"] = 8192
    save_config(config)
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# top\n[ui]\ntheme = \"nord\"  # mine\n")
    assert tomllib.loads(text) == {"ui": {"theme": "nord"}, "model": {"max_ctx": 8192}}
    assert load_config() == {**DEFAULTS, "ui": {**DEFAULTS["ui"], "theme": "nord"},
                             "model": {**DEFAULTS["model"], "max_ctx": 8192}}


def test_a_broken_file_is_one_clear_error_and_left_alone(baize_home: Path) -> None:
    path = get_paths().config_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[ui\ntheme = 1\n", encoding="utf-8")
    with pytest.raises(UserError, match="not valid TOML"):
        set_value("ui.theme", "nord")
    assert path.read_text(encoding="utf-8") == "[ui\ntheme = 1\n"
