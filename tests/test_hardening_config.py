"""Hardening, settings: config.toml is validated once; a bad key is named with its value and
expected type, falls back to its default, and never discards its good neighbours."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hardening_helpers import one_error, tui
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baize_tui import config as config_mod
from baize_tui.config import DEFAULTS, dumps_toml, load_config
from baize_tui.config_schema import SCHEMA
from baize_tui.engines.base import SamplingParams


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    config_mod._warned.clear()


def write(home: Path, text: str | bytes) -> Path:
    path = home / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def test_a_bad_chat_value_keeps_the_other_chat_values(baize_home: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write(baize_home, '[chat]\ntemperature = "hot"\ntop_p = 0.5\nsystem_prompt = "Be brief."\n')
    config = load_config()
    assert config["chat"] == {"top_p": 0.5, "system_prompt": "Be brief."}
    err = capsys.readouterr().err
    assert str(path) in err and "[chat] temperature" in err and '"hot"' in err
    assert "expected a number >= 0" in err
    assert SamplingParams.from_dict(config["chat"]).top_p == 0.5


@pytest.mark.parametrize(("text", "needles"), [
    ('[model]\nmax_ctx = "big"\n', ["[model] max_ctx", '"big"', "an integer >= 1"]),
    ("[model]\ndefault = 5\n", ["[model] default", "5", "a string"]),
    ('model = "str"\n', ['model = "str"', "expected a table [model]"]),
    ("[model]\nmax_ctx = -3\n", ["[model] max_ctx", "-3"]),
    ("[chat]\ntop_p = 7\n", ["[chat] top_p", "from 0 to 1"]),
    ("[ui]\nkeymap = 3\n", ["[ui] keymap", "a table of strings"]),
    ("[model]\ndirs = [1, 2]\n", ["[model] dirs", "a list of strings"]),
    ("[chat]\nseed = true\n", ["[chat] seed", "true"]),
    ("[openai]\nbase_url = [\"x\"]\n", ["[openai] base_url", "a string"]),
])
def test_wrong_types_are_named_and_replaced_by_defaults(
    baize_home: Path, capsys: pytest.CaptureFixture[str], text: str, needles: list[str]
) -> None:
    path = write(baize_home, text)
    config = load_config()
    assert config["model"]["max_ctx"] == DEFAULTS["model"]["max_ctx"] or "max_ctx" not in text
    err = capsys.readouterr().err
    assert str(path) in err
    for needle in needles:
        assert needle in err, (needle, err)


def test_good_keys_next_to_a_bad_one_survive(baize_home: Path) -> None:
    write(baize_home, '[model]\nmax_ctx = "big"\ndefault = "x.gguf"\ndirs = ["/m"]\n')
    config = load_config()
    assert config["model"] == {"default": "x.gguf", "max_ctx": 4096, "dirs": ["/m"]}


def test_each_problem_is_reported_once_per_process(baize_home: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    write(baize_home, "[model]\nmax_ctx = \"big\"\n")
    load_config()
    load_config()
    assert capsys.readouterr().err.count("max_ctx") == 1


def test_non_utf8_config_is_one_clear_error(baize_home: Path) -> None:
    path = write(baize_home, b'[model]\ndefault = "\xff\xfe"\n')
    one_error(tui("models", "list"), 2, str(path), "not UTF-8")


def test_invalid_toml_is_one_clear_error(baize_home: Path) -> None:
    path = write(baize_home, "[model\n")
    one_error(tui("models", "list"), 2, str(path), "not valid TOML")


def test_a_wrongly_typed_config_never_stops_a_command(baize_home: Path) -> None:
    path = write(baize_home, 'model = "str"\n[chat]\ntemperature = "hot"\n')
    out = tui("models", "list")
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and str(path) in out.stderr


# --------------------------------------------------------------------------- property test

scalars = st.one_of(
    st.text(max_size=20), st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
known_keys = st.sampled_from(sorted({k for table in SCHEMA.values() for k in table}))
tables = st.dictionaries(st.one_of(known_keys, st.text(max_size=8)), values, max_size=5)
documents = st.dictionaries(
    st.one_of(st.sampled_from(sorted(SCHEMA)), st.text(max_size=8)),
    st.one_of(tables, values), max_size=5,
)


def _consume(config: dict[str, Any]) -> None:
    """What the commands and the app do with the settings: none of it may raise."""
    from baize_tui import models
    from baize_tui.chat_core import ChatSettings

    SamplingParams.from_dict({k: v for k, v in config.get("chat", {}).items()
                              if k != "system_prompt" and k != "n_ctx"})
    settings_ = ChatSettings.from_config(config)
    assert math.isfinite(settings_.params.temperature)
    int(config["model"]["max_ctx"])
    models.search_dirs()
    for key, value in config["ui"].get("keymap", {}).items():
        assert isinstance(key, str) and isinstance(value, str)


def toml_value(value: Any) -> str:
    """Any generated value as TOML (inline tables, so lists may hold tables)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    return config_mod._toml_string(value)


def test_the_settings_writer_round_trips_astral_keys_and_del(baize_home: Path) -> None:
    data = {"ui": {"keymap": {"\U0001f600": "x\x7fy"}}, "model": {"default": "a\x00b"}}
    path = write(baize_home, dumps_toml(data))
    config = load_config(path)
    assert config["ui"]["keymap"] == {"\U0001f600": "x\x7fy"}
    assert config["model"]["default"] == "a\x00b"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_any_toml_document_loads_and_every_consumer_copes(baize_home: Path,
                                                          document: dict[str, Any]) -> None:
    text = "".join(f"{toml_value(k)} = {toml_value(v)}\n" for k, v in document.items())
    path = write(baize_home, text)
    config = load_config(path)
    for table, rules in SCHEMA.items():
        section = config.get(table, {})
        assert isinstance(section, dict)
        for key, rule in rules.items():
            if key in section and key not in DEFAULTS.get(table, {}):
                assert rule.check(section[key]), (table, key, section[key])
    _consume(config)
