"""Hardening, the app: a reply streaming in the real ``baize-tui`` app (in tmux) is on disk
while it streams, and SIGTERM saves it and leaves through Textual (terminal restored)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from openai_server import OpenAITestServer
from test_ui_tmux import AppInTmux

from baize_tui.config import set_value

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def saved_reply(db: Path) -> tuple[str, int] | None:
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute("SELECT text, complete FROM messages WHERE role = 'assistant'"
                          " ORDER BY id DESC LIMIT 1").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()
    return row


def wait_for(condition, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_sigterm_in_the_app_keeps_the_streaming_reply(baize_home: Path) -> None:
    db = baize_home / "data" / "history.sqlite3"
    with OpenAITestServer(reply="streaming words " * 200, chunk_size=4,
                          chunk_delay=0.05) as server:
        set_value("model.default", "openai:m")
        set_value("openai.base_url", server.base_url)
        tmux = AppInTmux(baize_home, (110, 32))
        try:
            tmux.wait_for(lambda s: "Search chats" in s and "loading" not in s,
                          what="the chat screen")
            tmux.keys("-l", "tell me a story")
            tmux.keys("Enter")
            wait_for(lambda: (saved_reply(db) or ("", 1))[0].count("words") >= 3,
                     "the reply on disk while it streams")
            server.chunk_delay = 120.0  # the stream stalls: only the timer can save now
            shell = tmux.pane("#{pane_pid}")
            app_pid = wait_for(lambda: subprocess.run(["pgrep", "-P", shell],
                                                      capture_output=True, text=True).stdout.split(),
                               "the app's pid")[0]
            before = saved_reply(db)
            assert before is not None and not before[1]  # incomplete while streaming
            import os

            os.kill(int(app_pid), signal.SIGTERM)
            try:
                wait_for(tmux.exited, "the app to exit", timeout=30)
            except AssertionError:
                print(tmux.screen())
                print(subprocess.run(["ps", "-o", "pid,stat,cmd", "--ppid", shell],
                                     capture_output=True, text=True).stdout)
                raise
            assert tmux.exited() == str(128 + signal.SIGTERM)
            screen = tmux.screen()
            assert "Traceback" not in screen
        finally:
            tmux.kill()
    after = saved_reply(db)
    assert after is not None and after[0].startswith(before[0]) and after[0].count("words") >= 3
