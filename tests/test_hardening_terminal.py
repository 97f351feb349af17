"""Hardening, terminal injection: stored text is data; control sequences reach a terminal only
as visible escapes, while exports to files keep the text byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hardening_helpers import tui
from openai_server import OpenAITestServer

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


# -- every other command that prints stored or model text -------------------------------------
EVIL = "\x1b]0;pwned\x07|\x1b[2J|\x1b]52;c;cm0gLXJmIH4=\x07|\x1b]8;;http://e/\x1b\\x\x1b]8;;\x1b\\|n\x00ul"
ARG = EVIL.replace("\x00", "")  # what a command line can carry (no NUL)


def assert_all_inert(out) -> None:  # noqa: ANN001 - a CompletedProcess
    assert "Traceback" not in out.stderr, out.stderr
    assert_inert(out.stdout)
    assert_inert(out.stderr)


def test_selfchat_run_status_and_export_print_stored_text_inert(baize_home: Path,
                                                                 tmp_path: Path) -> None:
    from openai_server import Error

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("first topic\nsecond topic\n")
    out_dir = tmp_path / "run"
    dialogue = f"[Human] hi {EVIL} [AI] hello {EVIL} [Human] thanks [AI] you are welcome"
    with OpenAITestServer(reply=dialogue) as server:
        server.push(Error(400, message=f"bad request {EVIL}"))
        run = tui("selfchat", "run", "--seeds", str(seeds), "--out", str(out_dir), "--model",
                  f"m{ARG}", "--base-url", server.base_url, "--no-progress",
                  "--max-retries", "0", env={"OPENAI_API_KEY": "sk-local-test"})
    assert_all_inert(run)
    status = tui("selfchat", "status", str(out_dir))
    assert status.returncode == 0, status.stderr
    assert "\\x1b]0;pwned" in status.stdout  # the model name, shown as text
    assert_all_inert(status)
    export = tmp_path / "export.json"
    exported = tui("selfchat", "export", str(out_dir), "-o", str(export))
    assert exported.returncode == 0, exported.stderr
    assert_all_inert(exported)
    assert "\x1b]0;pwned\x07" in json.loads(export.read_text())[0]["input"] + export.read_text()


def test_train_status_stop_and_list_print_stored_text_inert(baize_home: Path) -> None:
    from baize_tui.paths import get_paths

    run_dir = get_paths().runs_dir / "evil"
    run_dir.mkdir(parents=True)
    (run_dir / "config.toml").write_text(f'base = "{json.dumps(EVIL)[1:-1]}"\n')
    (run_dir / "status.json").write_text(json.dumps({"state": "failed", "message": EVIL}))
    for args in (["status", str(run_dir)], ["stop", str(run_dir)], ["list"]):
        out = tui("train", *args)
        assert out.returncode == 0, (args, out.stderr)
        assert_all_inert(out)
    assert "\\x1b]0;pwned" in tui("train", "status", str(run_dir)).stdout


def test_sdf_judge_status_and_export_print_stored_text_inert(baize_home: Path,
                                                             tmp_path: Path) -> None:
    from openai_server import Error
    from sdf_helpers import scripted_judge, write_candidates

    out_dir = tmp_path / "sdf"
    recs = write_candidates(out_dir, 3)
    for rec in recs:
        rec["model"] = f"m{EVIL}"
        for candidate in rec["candidates"]:
            candidate["text"] += EVIL
    (out_dir / "candidates.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    with OpenAITestServer(reply=scripted_judge) as server:
        server.push(Error(500, message=f"oops {EVIL}"), f"Answer 1: {EVIL}")
        judge = tui("sdf", "judge", str(out_dir), "--judge", f"openai:j{ARG}", "--base-url",
                    server.base_url, "--no-progress", "--concurrency", "1",
                    "--max-retries", "1", "--parse-retries", "0",
                    env={"OPENAI_API_KEY": "sk-local-test"})
    assert_all_inert(judge)
    status = tui("sdf", "status", str(out_dir))
    assert status.returncode == 0, status.stderr
    assert "\\x1b]0;pwned" in status.stdout
    assert_all_inert(status)
    target = tmp_path / f"best{ARG.replace('/', '_')}.jsonl"
    exported = tui("sdf", "export", str(out_dir), "-o", str(target))
    assert exported.returncode == 0, exported.stderr
    assert_all_inert(exported)
    best = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert best and all(EVIL in r["messages"][-1]["content"] for r in best)  # the file keeps it


def test_models_default_rm_and_errors_print_names_inert(baize_home: Path, tmp_path: Path) -> None:
    from baize_tui.config import set_value

    set_value("model.default", f"evil{ARG}.gguf")
    out = tui("models", "default")
    assert "\\x1b]0;pwned" in out.stdout
    assert_all_inert(out)
    for args in (["models", "rm", f"evil{ARG}"],
                 ["selfchat", "status", str(tmp_path / f"no{ARG}")],
                 ["train", "status", str(tmp_path / f"no{ARG}")],
                 ["history", "show", "1"]):
        failed = tui(*args)
        assert failed.returncode != 0, args
        assert_all_inert(failed)
    failed = tui("selfchat", "status", str(tmp_path / "no\x1b]0;pwned\x07"))
    assert "\\x1b]0;pwned" in failed.stderr
