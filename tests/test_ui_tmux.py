"""Smoke test of the real ``baize-tui`` command in a real terminal (tmux): start it, type a
message, see the reply on screen, quit with Ctrl+Q and check it exited cleanly.

This is where driver-level faults show up (llama.cpp redirecting file descriptors while a
model loads, key handling); the Pilot tests cannot see them. Skipped only without tmux.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from baize_tui.config import set_value
from baize_tui.history import HistoryStore

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One private tmux server (its own socket) running one command."""

    def __init__(self, command: list[str], env: dict[str, str], size: tuple[int, int]) -> None:
        self.socket = f"baize-test-{uuid.uuid4().hex[:8]}"
        env_args = [f"{key}={value}" for key, value in env.items()]
        # COLUMNS/LINES would override the pane's size (the test process may have them
        # set, and tmux passes its environment on): the app must see the real size.
        self.run("new-session", "-d", "-s", "main", "-x", str(size[0]), "-y", str(size[1]),
                 "env", "-u", "COLUMNS", "-u", "LINES", *env_args, *command)
        self.run("set-option", "-t", "main", "remain-on-exit", "on")

    def run(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                             text=True, timeout=30)
        return out.stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "main")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "main", *keys)

    def wait_for(self, predicate, timeout: float = 60.0, what: str = "") -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{text}")
            time.sleep(0.2)

    def pane(self, fmt: str) -> str:
        return self.run("display-message", "-p", "-t", "main", fmt).strip()

    def kill(self) -> None:
        self.run("kill-server")


class AppInTmux(Tmux):
    """The real ``baize-tui`` command (no arguments) in tmux, for ``baize_home``; the shell
    writes its exit status to :attr:`status_file` when it ends."""

    def __init__(self, baize_home: Path, size: tuple[int, int]) -> None:
        exe = Path(sys.executable).parent / "baize-tui"
        assert exe.exists(), exe
        self.status_file = baize_home / "exit-status"
        super().__init__(["sh", "-c", f'"{exe}"; echo $? > "{self.status_file}"'],
                         {"BAIZE_HOME": str(baize_home), "TERM": "xterm-256color",
                          "HF_HUB_OFFLINE": "1"}, size)

    def exited(self) -> str:
        """The app's exit status, or "" while it runs."""
        return self.status_file.read_text().strip() if self.status_file.exists() else ""

    def exit_status(self, timeout: float = 20.0) -> str:
        """Wait for the app to end; its exit status."""
        self.wait_for(lambda _: self.exited(), timeout=timeout, what="the app to exit")
        return self.exited()


def test_baize_tui_in_tmux(tiny_gguf: Path, baize_home: Path) -> None:
    set_value("model.default", str(tiny_gguf))
    set_value("chat.max_new_tokens", 16)
    tmux = AppInTmux(baize_home, (110, 32))
    try:
        tmux.wait_for(lambda s: "Search chats" in s and tiny_gguf.name in s
                      and "loading" not in s, what="the chat screen with the model loaded")
        tmux.keys("-l", "hello from tmux")
        tmux.keys("Enter")
        screen = tmux.wait_for(lambda s: "tokens" in s and "generating" not in s
                               and "hello from tmux" in s, what="the finished reply")
        with HistoryStore() as store:
            (conv,) = store.list_conversations()
            thread = store.thread(conv.id)
        assert [m.role for m in thread] == ["user", "assistant"]
        assert thread[0].text == "hello from tmux"
        reply = thread[1].text
        assert reply, "the tiny model produced no visible text"
        # The first words of the reply are on screen (Markdown may restyle punctuation).
        words = [w for w in reply.split() if w.isalnum()][:2] or [reply.split()[0][:3]]
        for word in words:
            assert word in screen, (word, screen)
        tmux.keys("C-q")
        assert tmux.exit_status() == "0"
    finally:
        tmux.kill()


def test_first_run_chat_settings_models_at_80x24(tiny_gguf: Path, baize_home: Path,
                                                 tmp_path: Path) -> None:
    """The real app in the smallest supported terminal: first run (the path field has focus,
    no Tab needed) → chat → F2 (Save, Cancel, Context size and Seed reachable) → F8 (the
    model opened on first run is listed, Status in view, no idle progress bar) → quit."""
    opened = tmp_path / "elsewhere" / "my-model.gguf"
    opened.parent.mkdir()
    shutil.copy(tiny_gguf, opened)
    set_value("chat.max_new_tokens", 16)
    tmux = AppInTmux(baize_home, (80, 24))
    try:
        tmux.wait_for(lambda s: "Welcome to baize-tui" in s, what="the first-run screen")
        tmux.keys("-l", str(opened))  # typed straight into the focused path field
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "my-model.gguf" in s and "loading" not in s
                      and "Welcome" not in s, what="the chat with the model loaded")
        tmux.keys("-l", "hello small screen")
        tmux.keys("Enter")
        tmux.wait_for(lambda s: "tok/s" in s and "generating" not in s
                      and "hello small screen" in s, what="the finished reply")
        tmux.keys("F2")
        screen = tmux.wait_for(lambda s: "Chat settings" in s, what="the settings")
        assert "Save" in screen and "Cancel" in screen, screen
        for _ in range(10):  # Tab down the form: the body scrolls to the focused field
            tmux.keys("Tab")
        tmux.keys("-l", "4321")  # typed into the field focus reached (Seed)
        screen = tmux.wait_for(lambda s: "Seed" in s and "Context size" in s and "4321" in s,
                               what="Context size and Seed scrolled into view")
        assert "Save" in screen and "Cancel" in screen, screen
        tmux.keys("Escape")  # edited: asks before throwing the edit away
        tmux.wait_for(lambda s: "Discard your changes?" in s, what="the confirmation")
        tmux.keys("y")
        tmux.wait_for(lambda s: "Chat settings" not in s, what="the settings closed")
        tmux.keys("F8")
        screen = tmux.wait_for(lambda s: "my-model.gguf" in s and "Status" in s,
                               what="the models screen listing the opened model")
        assert "--%" not in screen and "--:--" not in screen, screen
        tmux.keys("C-q")
        assert tmux.exit_status() == "0"
    finally:
        tmux.kill()
