"""``sdf sample`` against OpenAI-compatible servers: our test server (scripted replies, empty
candidates, 429s) and llama-cpp-python's own server on the tiny GGUF; and ``hf:BASE+LORA``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from openai_server import Error, OpenAITestServer, Reply
from sdf_helpers import read_jsonl

from baize_tui.cli import main

SECRET = "sk-test-SECRET-5e5e1234"


def write_prompts(path: Path, n: int) -> Path:
    path.write_text("".join(f"Prompt number {i}?\n" for i in range(n)))
    return path


def test_remote_candidates_with_retries_and_failures(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    counter = {"n": 0}

    def reply(body: dict) -> Reply | str:
        question = body["messages"][-1]["content"]
        if question == "Prompt number 3?":
            return Reply("[|Human|] only a tag")  # always empty once cut at the stop string
        counter["n"] += 1
        return f"Answer {counter['n']} to {question}[|Human|]more"

    src = write_prompts(tmp_path / "p.txt", 6)
    out = tmp_path / "run"
    with OpenAITestServer(reply) as server:
        server.push(Error.rate_limit(retry_after=0.05), "", Error(503))
        code = main(["sdf", "sample", "--prompts", str(src), "--model", "openai:baize",
                     "--base-url", server.base_url, "--n", "3", "--out", str(out),
                     "--concurrency", "3", "--max-tokens", "40", "--no-progress"])
        bodies = [r.body for r in server.requests if r.body]
    assert code == 0, capsys.readouterr().err
    recs = read_jsonl(out / "candidates.jsonl")
    assert sorted(r["prompt"] for r in recs) == [f"Prompt number {i}?" for i in (0, 1, 2, 4, 5)]
    for rec in recs:
        assert len(rec["candidates"]) == 3
        assert all(c["text"].startswith("Answer ") and c["text"].endswith(rec["prompt"])
                   for c in rec["candidates"])  # cut at [|Human|]
    failed = read_jsonl(out / "sample_failed.jsonl")
    assert [(f["prompt"], f["reason"]) for f in failed] == [("Prompt number 3?", "empty_candidate")]
    assert all(b["stop"] == ["[|Human|]", "[|AI|]"] and b["max_tokens"] == 40 for b in bodies)
    assert all(b["messages"] == [{"role": "user", "content": b["messages"][0]["content"]}]
               for b in bodies)
    for path in out.iterdir():
        assert SECRET not in path.read_text(errors="replace")
    # a re-run only retries the failed prompt (empty candidates are retryable)
    with OpenAITestServer(lambda body: "fine now") as server:
        assert main(["sdf", "sample", "--prompts", str(src), "--model", "openai:baize",
                     "--base-url", server.base_url, "--n", "3", "--out", str(out),
                     "--max-tokens", "40", "--no-progress"]) == 0
        assert server.count == 3
    assert len(read_jsonl(out / "candidates.jsonl")) == 6


def test_changed_settings_are_refused_on_resume(tmp_path: Path, capsys) -> None:
    src = write_prompts(tmp_path / "p.txt", 2)
    out = tmp_path / "run"
    with OpenAITestServer("ok") as server:
        args = ["sdf", "sample", "--prompts", str(src), "--model", "openai:baize", "--base-url",
                server.base_url, "--out", str(out), "--no-progress"]
        assert main(args + ["--n", "2"]) == 0
        assert main(args + ["--n", "3"]) == 2
    assert "n 2 -> 3" in capsys.readouterr().err


def test_hf_model_spec_samples_candidates(tiny: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    src = write_prompts(tmp_path / "p.txt", 2)
    out = tmp_path / "run"
    spec = f"hf:{tiny['llama']}+{tiny['lora_st']}"
    assert main(["sdf", "sample", "--prompts", str(src), "--model", spec, "--n", "2", "--out",
                 str(out), "--max-tokens", "4", "--no-progress"]) == 0
    recs = read_jsonl(out / "candidates.jsonl")
    assert len(recs) == 2 and all(len(r["candidates"]) == 2 for r in recs)
    assert all(r["model"] == spec for r in recs)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_candidates_from_llama_cpp_python_server(tiny_gguf: Path, tmp_path: Path) -> None:
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_gguf), "--host",
         "127.0.0.1", "--port", str(port), "--n_ctx", "1024", "--model_alias", "tiny-baize",
         "--n_threads", "1"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError((tmp_path / "server.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        src = write_prompts(tmp_path / "p.txt", 3)
        env = dict(os.environ, BAIZE_HOME=str(tmp_path / "home"))
        run = subprocess.run([sys.executable, "-m", "baize_tui.cli", "sdf", "sample", "--prompts",
                              str(src), "--model", "openai:tiny-baize", "--base-url", url, "--n",
                              "2", "--out", str(tmp_path / "run"), "--max-tokens", "8",
                              "--concurrency", "2", "--no-progress"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 0, run.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    recs = read_jsonl(tmp_path / "run" / "candidates.jsonl")
    failed = (tmp_path / "run" / "sample_failed.jsonl")
    n_failed = len(read_jsonl(failed)) if failed.exists() else 0
    assert len(recs) + n_failed == 3 and len(recs) >= 1  # gibberish may be empty: then a reason
    assert all(len(r["candidates"]) == 2 for r in recs)

