"""Hardening, history: hostile imports are refused naming the field, no stored row can crash a
reader, a damaged database is said to be damaged (and only then), OS faults are named."""

from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hardening_helpers import one_error, tui
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baize_tui.errors import UserError
from baize_tui.history import EXPORT_FORMAT, HistoryStore, ImportFormatError, format_time
from baize_tui.paths import get_paths


def export_doc(**conv: Any) -> dict[str, Any]:
    conversation = {"title": "t", "system_prompt": "", "model": "m", "params": {},
                    "created_at": 1.0e9, "updated_at": 1.0e9, "archived": False}
    conversation.update(conv)
    return {"format": EXPORT_FORMAT, "version": 1, "conversation": conversation,
            "messages": [{"id": 1, "parent_id": None, "role": "user", "text": "hi"}]}


def import_file(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "in.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return tui("history", "import", str(path)), path


@pytest.mark.parametrize(("raw", "field"), [
    ('"updated_at": 1e18', "conversation.updated_at"),
    ('"updated_at": 1e400', "conversation.updated_at"),
    ('"updated_at": NaN', "conversation.updated_at"),
    ('"created_at": -Infinity', "conversation.created_at"),
    ('"created_at": -5', "conversation.created_at"),
])
def test_absurd_timestamps_are_refused_naming_the_field(tmp_path: Path, raw: str,
                                                        field: str) -> None:
    text = json.dumps(export_doc()).replace('"updated_at": 1000000000.0', raw) \
        if "updated" in raw else json.dumps(export_doc()).replace('"created_at": 1000000000.0', raw)
    out, path = import_file(tmp_path, text)
    one_error(out, 2, str(path), field)
    # nothing was written, and every later command still works
    assert tui("history", "list").returncode == 0


def test_huge_integers_lone_surrogates_and_nan_params(tmp_path: Path) -> None:
    doc = export_doc()
    doc["messages"][0]["prompt_tokens"] = 2**70
    one_error(import_file(tmp_path, json.dumps(doc))[0], 2, "messages[0].prompt_tokens")
    doc = export_doc(title="bad \ud800 title")
    one_error(import_file(tmp_path, json.dumps(doc))[0], 2, "conversation.title",
              "lone surrogates")
    doc = export_doc()
    doc["messages"][0]["params"] = {"temperature": float("nan")}
    one_error(import_file(tmp_path, json.dumps(doc))[0], 2, "messages[0].params")
    doc = export_doc()
    doc["messages"][0]["ttft_s"] = float("inf")
    one_error(import_file(tmp_path, json.dumps(doc))[0], 2, "messages[0].ttft_s")


def test_deep_nesting_and_oversized_files(tmp_path: Path) -> None:
    out, path = import_file(tmp_path, "[" * 200_000 + "]" * 200_000)
    one_error(out, 2, str(path), "nested too deeply")
    big = tmp_path / "big.json"
    with big.open("wb") as fh:  # sparse: no real disk used
        fh.truncate(300 * 1024 * 1024)
    one_error(tui("history", "import", str(big)), 2, str(big), "larger than")


def test_a_stored_absurd_row_never_bricks_the_readers(tmp_path: Path) -> None:
    """Rows written by an older version (or by hand) with absurd values: every reader copes."""
    with HistoryStore() as store:
        cid = store.create_conversation(system_prompt="", model="m", params={})
        store.add_message(cid, parent_id=None, role="user", text="hi")
    with sqlite3.connect(get_paths().history_db) as db:
        db.execute("UPDATE conversations SET updated_at = 1e300, params_json = '{bad json'")
    listed = tui("history", "list")
    assert listed.returncode == 0 and "????" in listed.stdout, listed.stderr
    assert tui("history", "show", str(cid)).returncode == 0
    assert tui("history", "export", str(cid)).returncode == 0
    assert format_time(float("nan")) == format_time(1e300) == "????-??-?? ??:??"


def damage(db: Path) -> None:
    """Overwrite bytes in the middle of the file, as the field campaign did."""
    size = db.stat().st_size
    with db.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(b"\xde\xad\xbe\xef" * 1024)


def make_history(n: int = 60) -> Path:
    with HistoryStore() as store:
        for i in range(n):
            cid = store.create_conversation(system_prompt="", model="m", params={})
            store.add_message(cid, parent_id=None, role="user", text=f"burrow {i} " * 40)
    return get_paths().history_db


@pytest.mark.parametrize("args", [["list"], ["show", "1"], ["export", "1"], ["search", "burrow"]])
def test_a_damaged_database_is_named_once_and_never_written(args: list[str]) -> None:
    db = make_history()
    damage(db)
    before = db.read_bytes()
    line = one_error(tui("history", *args), 1, str(db), "damaged")
    assert "recover" in line
    assert db.read_bytes() == before


def test_ask_refuses_to_write_into_a_damaged_database(tiny_gguf: Path) -> None:
    db = make_history()
    damage(db)
    before = db.read_bytes()
    one_error(tui("ask", "-m", str(tiny_gguf), "-n", "4", "hello"), 1, str(db), "damaged")
    assert db.read_bytes() == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_history_is_named_not_called_damaged(baize_home: Path) -> None:
    db = make_history(2)
    data = db.parent
    os.chmod(db, 0o444)
    os.chmod(data, 0o555)
    try:
        out = tui("history", "rename", "1", "new")
        line = one_error(out, 1, str(db))
        assert "damaged" not in line and "move it aside" not in line
    finally:
        os.chmod(data, 0o755)
        os.chmod(db, 0o644)


def test_os_faults_of_the_store_are_translated() -> None:
    from baize_tui.history_guard import DamagedDatabase, db_fault

    path = Path("/x/history.sqlite3")
    full = db_fault(path, sqlite3.OperationalError("database or disk is full"))
    assert "disk is full" in str(full) and "fine" in str(full)
    assert not isinstance(full, DamagedDatabase)
    ro = db_fault(path, sqlite3.OperationalError("attempt to write a readonly database"))
    assert "read-only" in str(ro) and "damaged" not in str(ro)
    bad = db_fault(path, sqlite3.DatabaseError("database disk image is malformed"))
    assert isinstance(bad, DamagedDatabase) and str(path) in str(bad)


# --------------------------------------------------------------------------- property test

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
message_fields = st.fixed_dictionaries({}, optional={
    "id": st.one_of(st.integers(-3, 5), json_values), "parent_id": st.one_of(st.none(),
                                                                            st.integers(-1, 5)),
    "role": st.sampled_from(["user", "assistant", "system", 3]), "text": st.one_of(
        st.text(max_size=20), json_values),
    "created_at": st.one_of(st.floats(), st.integers(), json_values),
    "prompt_tokens": st.one_of(st.integers(), json_values), "ttft_s": st.floats(),
    "params": json_values, "complete": json_values, "finish_reason": json_values,
})
documents = st.one_of(json_values, st.fixed_dictionaries({
    "format": st.sampled_from([EXPORT_FORMAT, "other"]),
    "conversation": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "title": json_values, "created_at": st.one_of(st.floats(), st.integers()),
        "updated_at": st.one_of(st.floats(), st.integers()), "params": json_values,
        "archived": json_values, "current_leaf_id": json_values, "model": json_values,
    })),
    "messages": st.one_of(json_values, st.lists(message_fields, max_size=4)),
}))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(doc=documents)
def test_any_json_imports_or_is_refused_and_every_reader_copes(tmp_path: Path, doc: Any) -> None:
    with HistoryStore(tmp_path / "h.sqlite3") as store:
        try:
            new_id = store.import_json(doc)
        except ImportFormatError as exc:
            assert str(exc)
            return
        # whatever was accepted reads back, lists, formats and exports
        for summary in store.list_conversations(include_archived=True):
            format_time(summary.updated_at)
        store.export_markdown(new_id)
        exported = store.export_json(new_id)
        json.dumps(exported, allow_nan=False)
        conv = store.get_conversation(new_id)
        assert math.isfinite(conv.updated_at)
        store.last_conversation_id()
        store.search("a")


def test_import_errors_are_user_errors() -> None:
    assert issubclass(ImportFormatError, UserError)


@pytest.mark.parametrize("args", [["history", "list"], ["models", "list"],
                                  ["history", "rename", "1", "x"]])
def test_an_unusable_home_is_named_by_every_command(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    one_error(tui(*args, env={"BAIZE_HOME": str(home)}), 1, str(home))
