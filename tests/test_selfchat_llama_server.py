"""Self-chat against llama-cpp-python's own OpenAI-compatible server on the tiny GGUF.

Protocol realism: a real third-party server, not our test server. The tiny random model writes
gibberish, so every dialogue must end in failed.jsonl with a reason — which is the point.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def llama_server(tiny_gguf: Path, tmp_path: Path):
    port = free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--model_alias", "tiny-baize"],
        stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError((tmp_path / "server.log").read_text()[-2000:])
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


def test_selfchat_against_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("What is a llama?\nHow do rivers form?\nWhy is the sky blue?\n")
    out = tmp_path / "run"
    env = dict(os.environ, BAIZE_HOME=str(tmp_path / "home"))
    env.pop("OPENAI_API_KEY", None)  # a local server needs no key
    run = subprocess.run(
        [sys.executable, "-m", "baize_tui.cli", "selfchat", "run", "--seeds", str(seeds),
         "--out", str(out), "--model", "tiny-baize", "--base-url", llama_server,
         "--max-tokens", "48", "--concurrency", "2"],
        capture_output=True, text=True, env=env, timeout=300)
    failed = [json.loads(line) for line in (out / "failed.jsonl").read_text().splitlines()]
    raw = (out / "raw.jsonl").read_text().splitlines() if (out / "raw.jsonl").exists() else []
    # a run that completes nothing exits 1 and says why; one with a dialogue exits 0
    assert run.returncode == (0 if raw else 1), run.stderr
    assert len(failed) + len(raw) == 3
    assert len(failed) >= 2  # gibberish: rejected, each with a reason
    assert all(f.get("reason") for f in failed)
