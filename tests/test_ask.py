"""``baize-tui ask`` end to end: a real subprocess, the tiny GGUF in llama.cpp, real history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from openai_server import OpenAITestServer

from baize_tui.config import set_value
from baize_tui.history import HistoryStore
from baize_tui.prompt import render

BIN = Path(sys.executable).parent / "baize-tui"


def ask(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([str(BIN), "ask", *args], input=stdin, capture_output=True, text=True,
                          env=full_env, timeout=120)


def one_line_error(out: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("baize-tui: error: "), out.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_ask_streams_saves_and_continues(tiny_gguf: Path, baize_home: Path) -> None:
    model = str(tiny_gguf)
    first = ask("-m", model, "-n", "8", "--seed", "7", "--stats", "What is Baize?")
    assert first.returncode == 0, first.stderr
    reply = first.stdout
    assert reply.endswith("\n") and reply.strip()
    assert "reply tokens" in first.stderr and "Traceback" not in first.stderr
    again = ask("-m", model, "-n", "8", "--seed", "7", "--no-history", "What is Baize?")
    assert again.returncode == 0 and again.stdout == reply  # same seed, same reply

    with HistoryStore() as store:
        conv_id = store.last_conversation_id()
        assert conv_id is not None
        conv = store.get_conversation(conv_id)
        assert conv.model == model and conv.params["seed"] == 7
        thread = store.thread(conv_id)
    assert [m.role for m in thread] == ["user", "assistant"]  # --no-history added nothing
    assert thread[0].text == "What is Baize?"
    answer = thread[1]
    assert answer.text == reply.strip()
    assert answer.finish_reason in ("stop", "length") and answer.complete
    assert answer.completion_tokens and answer.prompt_tokens and answer.ttft_s is not None

    # --show-prompt prints the exact prompt of the next turn, byte for byte, and saves nothing.
    shown = ask("--continue", "--show-prompt", "And then?")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == render(None, [("What is Baize?", answer.text)], "And then?")

    second = ask("--continue", str(conv_id), "-n", "4", "And then?")  # the model comes from history
    assert second.returncode == 0, second.stderr
    # --continue PROMPT (no id) continues the last conversation too.
    third = ask("--continue", "-n", "4", "Third question")
    assert third.returncode == 0, third.stderr
    with HistoryStore() as store:
        roles = [m.role for m in store.thread(conv_id)]
        texts = [m.text for m in store.thread(conv_id) if m.role == "user"]
    assert roles == ["user", "assistant"] * 3
    assert texts == ["What is Baize?", "And then?", "Third question"]


def test_ask_reads_stdin_uses_the_default_model_and_system(tiny_gguf: Path) -> None:
    set_value("model.default", str(tiny_gguf))
    shown = ask("--show-prompt", "-n", "16", "-s", "You are terse.", "-", stdin="  from stdin \n")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == "You are terse.\n[|Human|]from stdin\n[|AI|]"
    out = ask("-n", "3", "-", stdin="hello")
    assert out.returncode == 0, out.stderr


def test_ask_errors_are_one_line(tiny_gguf: Path, tmp_path: Path) -> None:
    one_line_error(ask("hello"), 2, "no model given", "--model")
    one_line_error(ask("-m", str(tmp_path / "nope.gguf"), "hi"), 2, "nope.gguf", "not found")
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    one_line_error(ask("-m", str(notes), "hi"), 2, "not a GGUF file")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[:3000])
    one_line_error(ask("-m", str(broken), "hi"), 1, "broken.gguf")
    one_line_error(ask("-m", str(tiny_gguf), "-n", "8", "word " * 600), 2, "input too long",
                   "512")
    one_line_error(ask("-m", "openai:gpt-4o-mini", "hi"), 2, "OPENAI_API_KEY")
    one_line_error(ask("-m", str(tiny_gguf), "--continue", "hi"), 2, "no conversation")
    one_line_error(ask("-m", str(tiny_gguf), "--temperature", "-1", "hi"), 2, "temperature")
    one_line_error(ask("-m", str(tiny_gguf), ""), 2, "empty prompt")


def test_ask_openai_endpoint(baize_home: Path) -> None:
    with OpenAITestServer(reply="Hello from the test server.\n[|Human|]extra") as server:
        out = ask("-m", "openai:test-model", "--base-url", server.base_url, "hi there")
        assert out.returncode == 0, out.stderr
        assert out.stdout == "Hello from the test server.\n"
        assert server.requests[-1].body["messages"][-1] == {"role": "user", "content": "hi there"}
        shown = ask("-m", "openai:test-model", "--base-url", server.base_url, "--show-prompt", "x")
        assert shown.returncode == 0 and '"role": "system"' in shown.stdout
        assert len(server.requests) == 1  # --show-prompt sent nothing
        sent = server.requests[0].body
        assert json.loads(shown.stdout)["stop"] == sent["stop"]  # what is shown is what is sent


@pytest.mark.skipif(not hasattr(os, "setsid"), reason="POSIX only")
def test_ask_ctrl_c_saves_the_partial_reply(tiny_gguf: Path) -> None:
    """An interrupt mid-reply exits 130 and leaves the reply saved as cancelled."""
    import signal

    with OpenAITestServer(reply="word " * 200, chunk_size=5) as server:
        server.chunk_delay = 0.05
        proc = subprocess.Popen([str(BIN), "ask", "-m", "openai:m", "--base-url",
                                 server.base_url, "go"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        proc.stdout.read(10)  # wait until the reply streams (it is saved as it streams)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    with HistoryStore() as store:
        thread = store.thread(store.last_conversation_id())
    assert thread[-1].role == "assistant" and thread[-1].finish_reason == "cancelled"
    assert thread[-1].text.startswith("word word")
