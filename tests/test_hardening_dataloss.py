"""Hardening, data loss: a killed ``ask`` keeps what it printed; outputs never replace a link,
FIFO or directory with a regular file.

Real subprocesses, a real HTTP server streaming the reply, real SQLite; every wait is for a
condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from openai_server import OpenAITestServer

from baize_tui.history import HistoryStore

BIN = Path(sys.executable).parent / "baize-tui"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Output:
    """Collects a child's stdout in a thread, so the test can look at it while it runs."""

    def __init__(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.data = b""
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while chunk := os.read(self.fd, 4096):
            self.data += chunk

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


def saved_reply(db: Path) -> str | None:
    """The newest assistant message's text, read straight from the file."""
    if not db.exists():
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = con.execute(
            "SELECT text FROM messages WHERE role = 'assistant' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return None
    finally:
        con.close()
    return None if row is None else row[0]


def start_ask(server: OpenAITestServer) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen([str(BIN), "ask", "-m", "openai:m", "--base-url", server.base_url,
                             "-n", "400", "tell me"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc, Output(proc)


def stall_after_some_output(server: OpenAITestServer, out: Output) -> str:
    """Let a few chunks print, then make the server stop sending; returns what was printed
    once nothing more arrives (the old code saved only when the *next* token came)."""
    wait_for(lambda: len(out.text) >= 12, "the reply to start streaming")
    server.chunk_delay = 120.0  # the chunk already on its way may still come; then silence
    last = [out.text, time.monotonic()]

    def settled() -> bool:
        if out.text != last[0]:
            last[:] = [out.text, time.monotonic()]
        return time.monotonic() - last[1] > 0.5  # a chunk was due every 0.05 s

    wait_for(settled, "the stream to stall")
    return out.text


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGHUP"])
def test_killed_ask_keeps_every_printed_character(baize_home: Path, how: str) -> None:
    db = baize_home / "data" / "history.sqlite3"
    with OpenAITestServer(reply="abcdefghij " * 40, chunk_size=3, chunk_delay=0.05) as server:
        proc, out = start_ask(server)
        try:
            printed = stall_after_some_output(server, out)
            if how == "SIGKILL":
                # on disk within the saver's interval although no further token arrives
                wait_for(lambda: saved_reply(db) == printed, "the printed text on disk", 10)
            proc.send_signal(getattr(signal, how))
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert saved_reply(db) == printed
    if how != "SIGKILL":
        signum = getattr(signal, how)
        assert proc.returncode == 128 + signum, err
        assert b"Traceback" not in err and how.encode() in err
        with HistoryStore(db) as store:
            reply = store.thread(store.last_conversation_id())[-1]
        assert reply.finish_reason == "cancelled" and reply.text == printed


def test_sigterm_before_the_first_save_still_keeps_the_reply(baize_home: Path) -> None:
    """A polite kill right after the first characters show (well inside the save interval)."""
    db = baize_home / "data" / "history.sqlite3"
    with OpenAITestServer(reply="xyz " * 200, chunk_size=2, chunk_delay=0.2) as server:
        proc, out = start_ask(server)
        wait_for(lambda: len(out.text) >= 2, "the first characters")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    out.thread.join(5)
    assert proc.returncode == 128 + signal.SIGTERM
    assert saved_reply(db) == out.text and out.text


# ----------------------------------------------------------------- outputs that are not files


def export_to(target: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "history", "export", "1", "-o", str(target)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def one_conversation(baize_home: Path) -> int:
    with HistoryStore() as store:
        cid = store.create_conversation(system_prompt="s", model="m", params={})
        store.add_message(cid, parent_id=None, role="user", text="hello")
    return cid


def test_export_refuses_a_symlink_and_leaves_it_a_link(tmp_path: Path,
                                                       one_conversation: int) -> None:
    target = tmp_path / "real.json"
    target.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    result = export_to(link)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert str(link) in result.stderr and "symbolic link" in result.stderr
    assert link.is_symlink() and target.read_text() == "keep me"


def test_export_refuses_a_fifo_without_blocking(tmp_path: Path, one_conversation: int) -> None:
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    result = export_to(fifo)
    assert result.returncode == 1 and str(fifo) in result.stderr and "FIFO" in result.stderr
    assert fifo.is_fifo()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pipe.json")]  # no temp


def test_export_refuses_a_directory(tmp_path: Path, one_conversation: int) -> None:
    result = export_to(tmp_path)
    assert result.returncode == 1 and "directory" in result.stderr
    assert str(tmp_path) in result.stderr


def test_selfchat_export_refuses_a_symlink(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "raw.jsonl").write_text('{"id": "a", "mode": "v2", "transcript": "[Human] q [AI] a"}\n')
    target = tmp_path / "real.json"
    target.write_text("keep me")
    link = tmp_path / "out.json"
    link.symlink_to(target)
    result = subprocess.run([str(BIN), "selfchat", "export", str(run), "-o", str(link)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "symbolic link" in result.stderr and str(link) in result.stderr
    assert link.is_symlink() and target.read_text() == "keep me"


def test_safe_writer_replaces_a_regular_file_atomically(tmp_path: Path) -> None:
    from baize_tui.safe_write import atomic_write_text

    path = tmp_path / "f.txt"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]
