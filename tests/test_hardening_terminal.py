"""Hardening, terminal injection: stored text is data; control sequences reach a terminal only
as visible escapes, while exports to files keep the text byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hardening_helpers import tui

from baize_tui.history import HistoryStore
from baize_tui.termtext import is_terminal_safe, term_safe

HOSTILE = [
    "\x1b]0;pwned\x07",  # window title (OSC 0 … BEL)
    "\x1b[2J\x1b[H",  # clear screen
    "\x1b]52;c;cm0gLXJmIH4=\x07",  # OSC 52: write the clipboard
    "\x1b]8;;http://evil.example/\x1b\\click\x1b]8;;\x1b\\",  # OSC 8 link
    "nul\x00byte",
    "\x9b31m",  # C1 CSI
    "\u202eevil",  # right-to-left override
    "\rover",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_term_safe_leaves_nothing_a_terminal_obeys(text: str) -> None:
    shown = term_safe(text)
    assert is_terminal_safe(shown)
    assert not any(ch in shown for ch in "\x1b\x07\x00\x9b\u202e\r")
    assert term_safe("plain\ttext\nnext line ünïcødé 😀") == "plain\ttext\nnext line ünïcødé 😀"


@pytest.fixture
def hostile_history(baize_home: Path) -> int:
    with HistoryStore() as store:
        cid = store.create_conversation(system_prompt="\x1b[2J", model="m", params={},
                                        title="title \x1b]0;pwned\x07 here")
        parent = None
        for i, text in enumerate(HOSTILE):
            parent = store.add_message(cid, parent_id=parent,
                                       role="user" if i % 2 == 0 else "assistant",
                                       text=f"findme {text}")
    return cid


def assert_inert(output: str) -> None:
    assert is_terminal_safe(output.replace("\n", "")), repr(output)


def test_history_list_show_and_search_print_no_control_characters(hostile_history: int) -> None:
    for args in (["list"], ["show", str(hostile_history)], ["search", "findme"]):
        out = tui("history", *args)
        assert out.returncode == 0, out.stderr
        assert_inert(out.stdout)
        assert_inert(out.stderr)
    shown = tui("history", "show", str(hostile_history)).stdout
    assert "\\x1b]0;pwned" in shown  # still visible, as text


def test_exports_to_files_keep_the_text_intact(hostile_history: int, tmp_path: Path) -> None:
    out_file = tmp_path / "c.json"
    assert tui("history", "export", str(hostile_history), "-o", str(out_file)).returncode == 0
    data = json.loads(out_file.read_text())
    assert [m["text"] for m in data["messages"]] == [f"findme {t}" for t in HOSTILE]
    md = tmp_path / "c.md"
    assert tui("history", "export", str(hostile_history), "--format", "md",
               "-o", str(md)).returncode == 0
    assert "\x1b]0;pwned\x07" in md.read_text()


def test_ask_output_on_a_terminal_is_escaped(baize_home: Path) -> None:
    """``ask`` through a real pseudo-terminal, replying with escape sequences."""
    import os
    import pty
    import subprocess
    import sys

    from openai_server import OpenAITestServer

    with OpenAITestServer(reply="hi \x1b]0;pwned\x07 \x1b[2J there") as server:
        leader, follower = pty.openpty()
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "baize-tui"), "ask", "-m", "openai:m",
             "--base-url", server.base_url, "go"],
            stdin=subprocess.DEVNULL, stdout=follower, stderr=subprocess.PIPE)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=60)
        os.close(leader)
    shown = b"".join(chunks).decode()
    assert proc.returncode == 0
    assert "\x1b" not in shown and "\\x1b]0;pwned" in shown
    with HistoryStore() as store:  # the history keeps what the model said
        reply = store.thread(store.last_conversation_id())[-1].text
    assert "\x1b]0;pwned\x07" in reply


def test_models_list_escapes_names_from_disk(baize_home: Path) -> None:
    from test_hardening_models import gguf_tensorless

    from baize_tui.paths import get_paths

    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    gguf_tensorless(models_dir / "evil\x1b]0;pwned\x07.gguf")
    out = tui("models", "list")
    assert out.returncode == 0, out.stderr
    assert "evil\\x1b]0;pwned" in out.stdout
    assert_inert(out.stdout)
