"""``baize-tui history``, run as the installed console script in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from baize_tui.history import HistoryStore

SCRIPT = Path(sys.executable).parent / "baize-tui"


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``baize-tui history ARGS`` (BAIZE_HOME comes from the autouse fixture)."""
    return subprocess.run(
        [str(SCRIPT), "history", *args],
        capture_output=True,
        text=True,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        timeout=60,
    )


def fails(out: subprocess.CompletedProcess, status: int, *words: str) -> None:
    """A one-line error naming what is wrong, the right exit status, no traceback."""
    assert out.returncode == status, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("baize-tui: error: "), out.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


def seed() -> tuple[int, int]:
    with HistoryStore() as store:
        first = store.create_conversation(system_prompt="Be kind.", model="baize.gguf", params={})
        u = store.add_message(first, parent_id=None, role="user", text="How do pangolins sleep?")
        a = store.add_message(first, parent_id=u, role="assistant", text="Curled up in burrows.")
        store.update_message(a, finish_reason="stop", completion_tokens=5)
        store.add_message(first, parent_id=u, role="assistant", text="Rolled into a ball.")
        second = store.create_conversation(system_prompt="", model="other.gguf", params={})
        store.add_message(second, parent_id=None, role="user", text="Write a haiku about tea")
    return first, second


def test_list_show_search_rename_archive() -> None:
    empty = cli("list")
    assert empty.returncode == 0 and empty.stdout == "" and "no conversations" in empty.stderr
    first, second = seed()

    out = cli()  # `history` alone lists
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[0] == str(second) and "Write a haiku about tea" in lines[0]
    assert lines[1].split()[0] == str(first) and "3 msg" in lines[1]

    listed = json.loads(cli("list", "--json").stdout)
    assert [row["id"] for row in listed] == [second, first]
    assert listed[1] | {"updated_at": 0, "created_at": 0} == {
        "id": first,
        "title": "How do pangolins sleep?",
        "updated_at": 0,
        "created_at": 0,
        "message_count": 3,
        "archived": False,
        "model": "baize.gguf",
    }

    shown = cli("show", str(first))
    assert shown.returncode == 0, shown.stderr
    assert "# How do pangolins sleep?" in shown.stdout and "Be kind." in shown.stdout
    assert "## Assistant (2/2)\n\nRolled into a ball." in shown.stdout

    found = cli("search", "pango")
    assert found.returncode == 0 and f"{first}:" in found.stdout and "[pangolins]" in found.stdout
    hits = json.loads(cli("search", "burrows", "--json").stdout)
    assert [(h["conversation_id"], h["role"]) for h in hits] == [(first, "assistant")]
    assert cli("search", "nothing-like-this").stdout == ""

    assert cli("rename", str(first), "Pangolin facts").returncode == 0
    assert cli("archive", str(first)).returncode == 0
    assert str(first) not in [line.split()[0] for line in cli("list").stdout.splitlines()]
    archived = cli("list", "--all").stdout
    assert "Pangolin facts  [archived]" in archived
    assert cli("unarchive", str(first)).returncode == 0
    assert "[archived]" not in cli("list").stdout

    fails(cli("show", "999"), 2, "no conversation with id 999")
    fails(cli("rename", "999", "x"), 2, "999")
    fails(cli("search", '"open', "--raw"), 2, "bad search query")
    bad_id = cli("show", "abc")
    assert bad_id.returncode == 2 and "is not a whole number" in bad_id.stderr


def test_export_import_and_delete(tmp_path: Path) -> None:
    first, _ = seed()
    target = tmp_path / "out" / "chat.json"
    out = cli("export", str(first), "--format", "json", "-o", str(target))
    assert out.returncode == 0 and out.stdout == "" and str(target) in out.stderr
    assert not list(target.parent.glob(".*tmp"))  # the temp file was renamed into place
    doc = json.loads(target.read_text())
    assert len(doc["messages"]) == 3

    to_stdout = json.loads(cli("export", str(first)).stdout)  # json is the default
    assert to_stdout == doc
    md = tmp_path / "chat.md"
    assert cli("export", str(first), "--format", "md", "-o", str(md)).returncode == 0
    assert md.read_text().startswith("# How do pangolins sleep?")

    imported = cli("import", str(target))
    assert imported.returncode == 0, imported.stderr
    new_id = int(imported.stdout)
    assert "conversation" in imported.stderr and str(target) in imported.stderr
    copy = json.loads(cli("export", str(new_id)).stdout)
    assert [m["text"] for m in copy["messages"]] == [m["text"] for m in doc["messages"]]
    assert copy["conversation"] | {"id": 0, "current_leaf_id": 0} == doc["conversation"] | {
        "id": 0,
        "current_leaf_id": 0,
    }
    from_stdin = cli("import", "-", stdin=target.read_text())
    assert from_stdin.returncode == 0 and int(from_stdin.stdout) == new_id + 1

    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    fails(cli("import", str(broken)), 2, str(broken), "not valid JSON", "line 1")
    doc["messages"][1]["role"] = "robot"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(doc))
    fails(cli("import", str(wrong)), 2, str(wrong), "messages[1].role", "robot")
    fails(cli("import", str(tmp_path / "missing.json")), 2, "missing.json", "no such file")
    fails(cli("export", "999"), 2, "999")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    fails(cli("export", str(first), "-o", str(blocked / "x.json")), 1, "x.json", "cannot write")

    fails(cli("delete", str(first)), 2, "--yes", str(first))  # no terminal: never deletes silently
    assert cli("show", str(first)).returncode == 0
    deleted = cli("delete", str(first), "--yes")
    assert deleted.returncode == 0 and f"deleted conversation {first}" in deleted.stderr
    fails(cli("show", str(first)), 2, f"id {first}")
    fails(cli("delete", str(first), "--yes"), 2, f"id {first}")
    with HistoryStore() as store:
        assert store.search("burrows") and all(
            h.conversation_id != first for h in store.search("burrows")
        )


def test_unusable_database_is_one_clear_line(baize_home: Path) -> None:
    from baize_tui.paths import get_paths

    db = get_paths().history_db
    db.parent.mkdir(parents=True)
    db.write_bytes(b"garbage" * 1000)
    fails(cli("list"), 1, str(db), "the history database is damaged")
