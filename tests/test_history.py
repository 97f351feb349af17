"""The history store: message trees, search, migrations, crashes, concurrent writers, export."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from baize_tui import history
from baize_tui.errors import OperationFailed, UserError
from baize_tui.history import (
    SCHEMA_VERSION,
    HistoryStore,
    ImportFormatError,
    NotFoundError,
    fts_query,
    make_title,
)
from baize_tui.paths import get_paths


@pytest.fixture
def store() -> Any:
    with HistoryStore() as s:
        yield s


def new_chat(store: HistoryStore, **kw: Any) -> int:
    return store.create_conversation(
        system_prompt=kw.pop("system_prompt", "You are Baize."),
        model=kw.pop("model", "baize-7b.Q4_K_M.gguf"),
        params=kw.pop("params", {"temperature": 0.7}),
        **kw,
    )


def texts(messages: list[history.Message]) -> list[str]:
    return [m.text for m in messages]


# ---------------------------------------------------------------------- trees and branches


def test_default_location_wal_and_schema(store: HistoryStore) -> None:
    assert store.path == get_paths().history_db and store.path.exists()
    assert store.schema_version == SCHEMA_VERSION
    with sqlite3.connect(store.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_regenerate_edit_and_branch_browsing(store: HistoryStore) -> None:
    c = new_chat(store)
    assert store.thread(c) == [] and store.get_conversation(c).title is None
    u1 = store.add_message(c, parent_id=None, role="user", text="  Hi there\nsecond line")
    a1 = store.add_message(c, parent_id=u1, role="assistant", text="Hello!")
    assert store.get_conversation(c).title == "Hi there"  # first line of the first user message
    assert store.get_conversation(c).current_leaf_id == a1

    a2 = store.add_message(c, parent_id=u1, role="assistant", text="Hello again!")  # regenerate
    assert texts(store.thread(c)) == ["  Hi there\nsecond line", "Hello again!"]
    assert [m.id for m in store.siblings(a1)] == [a1, a2] == [m.id for m in store.children(u1)]

    assert store.select_sibling(a2, -1) == a1  # ← shows the first reply again
    assert texts(store.thread(c))[-1] == "Hello!"
    assert store.select_sibling(a1, -1) is None  # nothing left of the first sibling

    u2 = store.add_message(c, parent_id=a1, role="user", text="Tell me more")
    a3 = store.add_message(c, parent_id=u2, role="assistant", text="More.")
    u2b = store.add_message(c, parent_id=a1, role="user", text="Tell me less")  # edit
    a4 = store.add_message(c, parent_id=u2b, role="assistant", text="Less.")
    assert texts(store.thread(c)) == ["  Hi there\nsecond line", "Hello!", "Tell me less", "Less."]
    assert store.get_conversation(c).title == "Hi there"  # later user messages keep the title

    # Selecting a branch follows it down to where it was last continued.
    assert store.select_branch(u2) == a3
    assert [m.id for m in store.thread(c)] == [u1, a1, u2, a3]
    assert store.select_branch(a2) == a2
    assert store.select_branch(u1) == a4  # the newest message anywhere below u1
    assert [m.id for m in store.thread(c, leaf_id=a3)] == [u1, a1, u2, a3]

    # Editing the very first message makes a second root.
    u1b = store.add_message(c, parent_id=None, role="user", text="Hey")
    assert [m.id for m in store.siblings(u1)] == [u1, u1b]
    assert store.select_sibling(u1b, -1) == a4
    assert len(store.messages(c)) == 8

    # "Remove last turn": delete the user message; the thread ends at its parent.
    store.delete_message(u2b)
    assert store.get_conversation(c).current_leaf_id == a1
    assert {m.id for m in store.messages(c)} == {u1, a1, a2, u2, a3, u1b}
    store.set_current_leaf(a3)
    store.delete_message(u1b)  # not on the shown thread: the leaf stays
    assert store.get_conversation(c).current_leaf_id == a3


def test_message_errors_name_the_id(store: HistoryStore) -> None:
    c, other = new_chat(store), new_chat(store)
    u = store.add_message(c, parent_id=None, role="user", text="x")
    with pytest.raises(NotFoundError, match="no conversation with id 999") as err:
        store.add_message(999, parent_id=None, role="user", text="x")
    assert isinstance(err.value, UserError) and err.value.exit_code == 2
    with pytest.raises(NotFoundError, match="no message with id 12345"):
        store.update_message(12345, text="y")
    with pytest.raises(NotFoundError, match="no message with id 777"):
        store.add_message(c, parent_id=777, role="assistant", text="y")
    with pytest.raises(ValueError, match="belongs to conversation"):
        store.add_message(other, parent_id=u, role="assistant", text="y")
    with pytest.raises(ValueError, match="role"):
        store.add_message(c, parent_id=u, role="system", text="y")
    with pytest.raises(ValueError, match="finish_reason"):
        store.update_message(u, finish_reason="done")
    for call in (
        store.get_conversation,
        store.thread,
        store.delete_conversation,
        store.export_json,
    ):
        with pytest.raises(NotFoundError, match="id 4242"):
            call(4242)
    with pytest.raises(UserError, match="empty"):
        store.rename(c, "   ")


def test_streaming_reply_fields(store: HistoryStore) -> None:
    c = new_chat(store)
    u = store.add_message(c, parent_id=None, role="user", text="Count")
    a = store.add_message(
        c,
        parent_id=u,
        role="assistant",
        text="",
        model="m.gguf",
        params={"seed": 1},
        complete=False,
    )
    assert store.get_message(a).interrupted
    for piece in ("1", "1 2", "1 2 3"):
        store.update_message(a, text=piece)
    store.update_message(
        a,
        finish_reason="cancelled",
        prompt_tokens=12,
        completion_tokens=3,
        ttft_s=0.25,
        tokens_per_s=41.5,
    )
    m = store.get_message(a)
    assert (m.text, m.finish_reason, m.complete, m.interrupted) == (
        "1 2 3",
        "cancelled",
        False,
        False,
    )
    assert (m.prompt_tokens, m.completion_tokens, m.ttft_s, m.tokens_per_s) == (12, 3, 0.25, 41.5)
    assert (m.model, m.params, m.role, m.parent_id) == ("m.gguf", {"seed": 1}, "assistant", u)
    store.update_message(a, complete=True, finish_reason="stop")
    assert store.get_message(a).complete and store.get_message(a).finish_reason == "stop"


def test_update_message_from_a_worker_thread(store: HistoryStore) -> None:
    c = new_chat(store)
    a = store.add_message(c, parent_id=None, role="assistant", text="", complete=False)
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            for i in range(50):
                store.update_message(a, text="x" * i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=stream) for _ in range(2)]
    for w in workers:
        w.start()
    for _ in range(50):
        store.thread(c)
    for w in workers:
        w.join()
    assert not errors and store.get_message(a).text == "x" * 49


def test_update_message_is_cheap(store: HistoryStore) -> None:
    c = new_chat(store)
    a = store.add_message(c, parent_id=None, role="assistant", text="", complete=False)
    reply = ""
    start = time.perf_counter()
    for i in range(200):  # a 6,000-word reply rewritten 200 times
        reply += " ".join(f"token{i}_{j}" for j in range(30)) + "\n"
        store.update_message(a, text=reply)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"200 streaming updates took {elapsed:.2f} s"
    assert store.search("token199_29")[0].message_id == a


def test_title_rules() -> None:
    assert make_title("\n\n   hello    world  \nmore") == "hello world"
    assert make_title("   \n ") is None
    long = make_title("word " * 40)
    assert long is not None and long.endswith("…") and len(long) <= 80


def test_list_conversations_newest_first(store: HistoryStore) -> None:
    assert store.list_conversations() == [] and store.last_conversation_id() is None
    first, second, third = new_chat(store), new_chat(store, model="other"), new_chat(store)
    for i in range(3):
        store.add_message(first, parent_id=None, role="user", text=f"first {i}")
    store.add_message(second, parent_id=None, role="user", text="second")
    time.sleep(0.01)  # not a wait for an event: the next write must get a later timestamp
    store.add_message(first, parent_id=None, role="user", text="first again")  # now the newest
    rows = store.list_conversations()
    assert [r.id for r in rows] == [first, second, third]
    assert [r.message_count for r in rows] == [4, 1, 0]
    assert rows[0].title == "first 0" and rows[1].model == "other" and rows[2].title is None
    assert rows[2].display_title == "New conversation"
    assert store.last_conversation_id() == first

    store.set_archived(first)
    assert [r.id for r in store.list_conversations()] == [second, third]
    assert [r.id for r in store.list_conversations(include_archived=True, limit=2)] == [
        first,
        second,
    ]
    assert [r.id for r in store.list_conversations(archived_only=True)] == [first]
    assert store.last_conversation_id() == second
    store.set_archived(first, False)
    assert not store.get_conversation(first).archived

    store.rename(second, "  A   better\nname ")
    assert store.get_conversation(second).title == "A better name"
    store.update_conversation(third, system_prompt="Be brief.", params={"top_k": 40})
    got = store.get_conversation(third)
    assert (got.system_prompt, got.params, got.model) == (
        "Be brief.",
        {"top_k": 40},
        "baize-7b.Q4_K_M.gguf",
    )

    store.delete_conversation(second)
    assert [r.id for r in store.list_conversations()] == [first, third]
    assert new_chat(store) > third  # ids are never reused


# ---------------------------------------------------------------------- search


def fts_consistent(store: HistoryStore) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        indexed = db.execute("SELECT count(*) FROM messages_fts").fetchone()[0]
        assert indexed == db.execute("SELECT count(*) FROM messages").fetchone()[0]


def test_search(store: HistoryStore) -> None:
    c1, c2 = new_chat(store), new_chat(store)
    u = store.add_message(c1, parent_id=None, role="user", text="How do I bake sourdough bread?")
    a = store.add_message(c1, parent_id=u, role="assistant", text="Sourdough needs a starter.")
    u2 = store.add_message(c2, parent_id=None, role="user", text="Un café, s'il vous plaît")
    store.add_message(c2, parent_id=u2, role="assistant", text='C++ templates & -flags: "quoted"')

    hits = store.search("sourdough")
    assert [(h.conversation_id, h.message_id) for h in hits] == [(c1, u), (c1, a)]  # user first
    assert (
        "[sourdough]" in hits[0].snippet.lower()
        and hits[0].title == "How do I bake sourdough bread?"
    )
    assert [h.message_id for h in store.search("sourd")] == [u, a]  # last word is a prefix
    assert store.search("sourd", prefix=False) == []
    assert [h.message_id for h in store.search("bread starter")] == []  # all words must occur
    assert [h.conversation_id for h in store.search("CAFE")] == [c2]  # case and accents folded
    assert len(store.search('c++ -flags: "quoted')) == 1  # punctuation never breaks the query
    assert store.search("   ") == [] and store.search("---") == []
    assert store.search("sourdough", mark=("<b>", "</b>"))[0].snippet.count("<b>") == 1
    assert [h.message_id for h in store.search("starter OR bake", raw=True)] == [u, a]
    with pytest.raises(UserError, match="bad search query"):
        store.search('"unbalanced', raw=True)
    assert fts_query('say "hi" -now') == '"say" """hi""" "-now"*'

    store.update_message(a, text="Use rye flour.")  # the index follows edits...
    assert [h.message_id for h in store.search("sourdough")] == [u]
    assert [h.message_id for h in store.search("rye")] == [a]
    store.set_archived(c1)
    assert store.search("rye", include_archived=False) == []
    store.delete_conversation(c1)  # ...and deletions, including cascades
    assert store.search("rye") == [] and store.search("sourdough") == []
    fts_consistent(store)


# ---------------------------------------------------------------------- migrations

# The version 1 schema exactly as it shipped: frozen here, so this test keeps checking the
# upgrade path even after history.py moves on.
SCHEMA_V1 = """
CREATE TABLE conversations (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    title           TEXT,
    system_prompt   TEXT    NOT NULL DEFAULT '',
    model           TEXT    NOT NULL DEFAULT '',
    params_json     TEXT    NOT NULL DEFAULT '{}',
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    archived        INTEGER NOT NULL DEFAULT 0 CHECK (archived IN (0, 1)),
    current_leaf_id INTEGER REFERENCES messages(id) ON DELETE SET NULL
);
CREATE TABLE messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id   INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    parent_id         INTEGER REFERENCES messages(id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('user', 'assistant')),
    text              TEXT    NOT NULL DEFAULT '',
    created_at        REAL    NOT NULL,
    model             TEXT,
    params_json       TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    ttft_s            REAL,
    tokens_per_s      REAL,
    finish_reason     TEXT CHECK (finish_reason IN ('stop', 'length', 'cancelled', 'error')),
    complete          INTEGER NOT NULL DEFAULT 1 CHECK (complete IN (0, 1))
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
CREATE INDEX messages_by_parent ON messages(parent_id);
CREATE INDEX conversations_by_updated ON conversations(archived, updated_at);
CREATE INDEX conversations_by_leaf ON conversations(current_leaf_id);
INSERT INTO conversations VALUES (1, 'Old chat', 'sys', 'old.gguf', '{"temperature": 0.5}',
                                  1700000000.0, 1700000100.0, 0, 3);
INSERT INTO messages VALUES (1, 1, NULL, 'user', 'What is a pangolin?', 1700000000.0,
                             NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1);
INSERT INTO messages VALUES (2, 1, 1, 'assistant', 'A scaly anteater.', 1700000001.0,
                             'old.gguf', '{"seed": 3}', 10, 5, 0.1, 20.0, 'stop', 1);
INSERT INTO messages VALUES (3, 1, 1, 'assistant', 'A mammal covered in scales', 1700000002.0,
                             'old.gguf', NULL, 10, 6, 0.1, 20.0, NULL, 0);
PRAGMA user_version = 1;
"""


def make_v1_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    db.close()


def test_migrates_a_version_1_database() -> None:
    path = get_paths().history_db
    make_v1_db(path)
    with HistoryStore() as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        assert [h.message_id for h in store.search("pangolin")] == [1]  # back-filled index
        assert [h.message_id for h in store.search("scales")] == [3]
        thread = store.thread(1)
        assert texts(thread) == ["What is a pangolin?", "A mammal covered in scales"]
        assert thread[1].interrupted and store.get_message(2).params == {"seed": 3}
        new = store.add_message(1, parent_id=3, role="user", text="Where do they live?")
        assert [h.message_id for h in store.search("live")] == [new]
        fts_consistent(store)
    with HistoryStore() as store:  # reopening is a no-op
        assert store.schema_version == SCHEMA_VERSION and len(store.messages(1)) == 4


def test_failed_migration_leaves_the_database_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    path = get_paths().history_db
    make_v1_db(path)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setitem(history.MIGRATIONS, 2, broken)
    with pytest.raises(RuntimeError, match="migration bug"):
        HistoryStore()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables and "messages" in tables


def test_refuses_newer_schema_and_garbage_files(tmp_path: Path) -> None:
    newer = tmp_path / "newer.sqlite3"
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    with pytest.raises(
        OperationFailed, match=f"newer.sqlite3: history schema version {SCHEMA_VERSION + 5}"
    ):
        HistoryStore(newer)
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OperationFailed, match="garbage.sqlite3: the history database is damaged"):
        HistoryStore(garbage)


# ---------------------------------------------------------------------- processes

CHILD = Path(sys.executable)


def run_python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(CHILD), "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


STREAMER = """
    import time
    from baize_tui.history import HistoryStore

    store = HistoryStore()
    c = store.create_conversation(system_prompt="", model="m.gguf", params={})
    u = store.add_message(c, parent_id=None, role="user", text="Tell me a long story")
    a = store.add_message(c, parent_id=u, role="assistant", text="", model="m.gguf", complete=False)
    print(c, u, a, flush=True)
    text = ""
    i = 0
    while True:
        text += f"word{i} "
        store.update_message(a, text=text)
        print(len(text), flush=True)
        i += 1
        time.sleep(0.002)
"""


def test_kill_mid_reply_keeps_the_partial_text() -> None:
    proc = run_python(STREAMER)
    try:
        assert proc.stdout is not None
        c, u, a = map(int, proc.stdout.readline().split())
        committed = 0
        for _ in range(40):
            committed = int(proc.stdout.readline())
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    expected = "".join(f"word{i} " for i in range(1000))
    with HistoryStore() as store:
        thread = store.thread(c)
        assert [m.id for m in thread] == [u, a]
        assert thread[0].text == "Tell me a long story" and thread[0].complete
        reply = thread[1]
        assert len(reply.text) >= committed > 0 and expected.startswith(reply.text)
        assert not reply.complete and reply.finish_reason is None and reply.interrupted
        assert store.search("word3")[0].message_id == a
        fts_consistent(store)
        with sqlite3.connect(store.path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


WRITER = """
    import sys, time
    from pathlib import Path
    from baize_tui.history import HistoryStore

    name, conversation, count, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    (go.parent / f"ready-{name}").touch()  # started and imported: waiting for the others
    while not go.exists():
        time.sleep(0.005)
    store = HistoryStore()  # opened at the same moment as the other writers
    if conversation == "new":
        conversation = store.create_conversation(system_prompt="", model=name, params={})
    parent = None
    for i in range(count):
        role = "user" if i % 2 == 0 else "assistant"
        parent = store.add_message(int(conversation), parent_id=parent, role=role, text="")
        store.update_message(parent, text=f"{name} message {i}", completion_tokens=i)
        time.sleep(0.001)  # like a streaming reply: keeps both writers busy in the same window
    print(conversation)
"""


def start_writers(tmp_path: Path, jobs: list[tuple[str, str, int]]) -> list[str]:
    go = tmp_path / "go"
    procs = [run_python(WRITER, name, conv, str(n), str(go)) for name, conv, n in jobs]
    ready = [tmp_path / f"ready-{name}" for name, _, _ in jobs]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in ready):  # every interpreter started; then release them
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
            "a writer did not start"
        time.sleep(0.01)
    go.write_text("go")
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    with HistoryStore() as store:
        shared = new_chat(store)
    start_writers(tmp_path, [("alpha", str(shared), 200), ("beta", str(shared), 200)])
    with HistoryStore() as store:
        messages = store.messages(shared)
        assert len(messages) == 400
        expected = {f"{name} message {i}" for name in ("alpha", "beta") for i in range(200)}
        assert set(texts(messages)) == expected
        # The writes really did interleave (both were writing during the same window).
        alpha = [m.id for m in messages if m.text.startswith("alpha")]
        beta = [m.id for m in messages if m.text.startswith("beta")]
        assert min(alpha) < max(beta) and min(beta) < max(alpha)
        # Each writer built its own branch of the one tree; both stay whole.
        leaf = store.get_conversation(shared).current_leaf_id
        assert leaf is not None and len(store.thread(shared)) == 200
        assert len(store.search("alpha", limit=1000)) == 200
        fts_consistent(store)


def test_writers_racing_to_create_the_database(tmp_path: Path) -> None:
    assert not get_paths().history_db.exists()
    ids = start_writers(tmp_path, [(f"w{i}", "new", 20) for i in range(4)])
    with HistoryStore() as store:
        assert store.schema_version == SCHEMA_VERSION
        rows = store.list_conversations()
        assert sorted(r.id for r in rows) == sorted(map(int, ids)) and len(set(ids)) == 4
        assert all(r.message_count == 20 for r in rows)


# ---------------------------------------------------------------------- export / import


def build_tree(store: HistoryStore) -> int:
    c = store.create_conversation(
        system_prompt="Du bist Baize. 🦊",
        model="baize-v2-7b.Q4_K_M.gguf",
        params={"temperature": 0.7, "top_p": 0.95, "stop": ["[|Human|]"], "seed": None},
        title="Custom title",
    )
    u = store.add_message(c, parent_id=None, role="user", text="Grüß dich\n\n```py\nprint(1)\n```")
    a1 = store.add_message(
        c, parent_id=u, role="assistant", text="", model="a.gguf", complete=False
    )
    store.update_message(a1, text="Half a rep", finish_reason="cancelled", ttft_s=0.123456789)
    a2 = store.add_message(
        c, parent_id=u, role="assistant", text="Hallo!", model="a.gguf", params={"temperature": 1.3}
    )
    store.update_message(
        a2,
        finish_reason="stop",
        prompt_tokens=17,
        completion_tokens=4,
        ttft_s=0.2,
        tokens_per_s=1 / 3,
    )
    u2 = store.add_message(c, parent_id=a2, role="user", text="and now?")
    store.add_message(c, parent_id=u2, role="assistant", text="crash", complete=False)
    store.add_message(c, parent_id=None, role="user", text="edited root")
    store.set_current_leaf(a2)
    store.set_archived(c)
    return c


def without_ids(doc: dict[str, Any]) -> dict[str, Any]:
    """The export with every id replaced by its rank, so two copies compare equal."""
    doc = json.loads(json.dumps(doc))
    rank = {m["id"]: i for i, m in enumerate(doc["messages"])}
    del doc["conversation"]["id"]
    doc["conversation"]["current_leaf_id"] = rank[doc["conversation"]["current_leaf_id"]]
    for m in doc["messages"]:
        m["id"] = rank[m["id"]]
        m["parent_id"] = None if m["parent_id"] is None else rank[m["parent_id"]]
    return doc


def test_export_import_round_trip(store: HistoryStore) -> None:
    original = build_tree(store)
    exported = store.export_json(original)
    assert exported["format"] == "baize-tui.conversation" and len(exported["messages"]) == 6
    assert set(exported["messages"][0]) >= {
        "id",
        "parent_id",
        "role",
        "text",
        "created_at",
        "model",
        "params",
        "prompt_tokens",
        "completion_tokens",
        "ttft_s",
        "tokens_per_s",
        "finish_reason",
        "complete",
    }
    copy = store.import_json(json.loads(json.dumps(exported)))  # through real JSON text
    assert copy != original
    again = store.export_json(copy)
    assert without_ids(again) == without_ids(exported)
    assert (
        again["conversation"]["archived"] is True
        and again["conversation"]["title"] == "Custom title"
    )
    assert texts(store.thread(copy)) == texts(store.thread(original))
    assert len(store.search("Hallo")) == 2  # the copy is searchable too
    # And into a different database file.
    with HistoryStore(store.path.parent / "other.sqlite3") as other:
        third = other.import_json(exported)
        assert without_ids(other.export_json(third)) == without_ids(exported)


def test_markdown_export(store: HistoryStore) -> None:
    c = build_tree(store)
    md = store.export_markdown(c)
    assert md.startswith("# Custom title\n")
    assert "## System prompt\n\nDu bist Baize. 🦊" in md
    assert "## User (1/2)\n\nGrüß dich\n\n```py\nprint(1)\n```" in md
    assert "## Assistant (2/2)\n\nHallo!" in md and "4 tokens" in md and "Half a rep" not in md
    store.select_sibling(store.thread(c)[-1].id, -1)
    assert "*stopped by the user · a.gguf" in store.export_markdown(c)
    leaf = store.select_branch(store.thread(c)[0].id)  # the newest message below the first root
    assert store.get_message(leaf).text == "crash"
    assert "crash\n\n*incomplete: the reply was interrupted*" in store.export_markdown(c)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="something-else"), "format: expected 'baize-tui.conversation'"),
        (lambda d: d.update(version=99), "version: 99 is newer"),
        (lambda d: d.pop("conversation"), "conversation: missing"),
        (lambda d: d["conversation"].update(params=[1]), "conversation.params: expected an object"),
        (lambda d: d["conversation"].update(current_leaf_id=999), "conversation.current_leaf_id"),
        (lambda d: d.update(messages={}), "messages: expected a list"),
        (lambda d: d["messages"][1].update(role="bot"), "messages[1].role: expected 'user' or"),
        (lambda d: d["messages"][2].pop("text"), "messages[2].text: missing"),
        (lambda d: d["messages"][2].update(complete="yes"), "messages[2].complete: expected true"),
        (lambda d: d["messages"][1].update(prompt_tokens=True), "messages[1].prompt_tokens"),
        (lambda d: d["messages"][1].update(finish_reason="eos"), "messages[1].finish_reason"),
        (lambda d: d["messages"][1].update(id=d["messages"][0]["id"]), "messages[1].id"),
        (lambda d: d["messages"][1].update(parent_id=5000), "messages[1].parent_id: 5000"),
    ],
)
def test_import_rejects_bad_documents(store: HistoryStore, mutate: Any, message: str) -> None:
    doc = store.export_json(build_tree(store))
    before = len(store.list_conversations(include_archived=True))
    mutate(doc)
    with pytest.raises(ImportFormatError) as err:
        store.import_json(doc)
    assert message in str(err.value)
    assert len(store.list_conversations(include_archived=True)) == before  # nothing stored


def test_import_fills_defaults_for_minimal_documents(store: HistoryStore) -> None:
    c = store.import_json(
        {
            "format": "baize-tui.conversation",
            "conversation": {},
            "messages": [
                {"id": 10, "role": "user", "text": "hand written"},
                {"id": 11, "parent_id": 10, "role": "assistant", "text": "fine"},
            ],
        }
    )
    got = store.get_conversation(c)
    assert got.title is None and got.params == {} and not got.archived
    assert texts(store.thread(c)) == ["hand written", "fine"]
