"""Hardening, the command line: a closed pipe ends a command quietly, environment faults
(disk full, read-only, no permission, a refused pickle) are one line, SIGTERM exits 143."""

from __future__ import annotations

import errno
import pickle
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from baize_tui.errors import run_reporting_errors
from baize_tui.history import HistoryStore

BIN = Path(sys.executable).parent / "baize-tui"


@pytest.fixture(scope="module")
def big_history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """More output than a pipe buffers (64 KiB), so the writer does meet the closed pipe."""
    path = tmp_path_factory.mktemp("big-history") / "history.sqlite3"
    with HistoryStore(path) as store:
        big = store.create_conversation(system_prompt="", model="m", params={})
        store.add_message(big, parent_id=None, role="user", text="question long " * 30_000)
        for i in range(1500):
            cid = store.create_conversation(system_prompt="", model="m", params={},
                                            title=f"conversation {i} " + "x" * 70)
            if i < 60:
                store.add_message(cid, parent_id=None, role="user", text=f"question {i} " * 20)
    return path


@pytest.fixture
def many_conversations(big_history: Path, baize_home: Path) -> None:
    import shutil

    from baize_tui.paths import get_paths

    db = get_paths().history_db
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(big_history, db)


@pytest.mark.parametrize("args", [["history", "list"], ["history", "show", "1"],
                                  ["history", "search", "question"], ["paths"]])
def test_a_closed_pipe_ends_quietly(many_conversations: None, args: list[str]) -> None:
    """``baize-tui … | head -1``: the reader goes away after one line."""
    proc = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read() if proc.stderr else b""
    proc.wait(timeout=60)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert b"Exception ignored" not in err
    assert proc.returncode in (0, 141)


@pytest.mark.parametrize(("exc", "words"), [
    (OSError(errno.ENOSPC, "No space left on device", "/data/out.gguf"), ["/data/out.gguf", "full"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), ["/ro/x", "read-only"]),
    (PermissionError(errno.EACCES, "Permission denied", "/p/y"), ["/p/y", "permission denied"]),
    (pickle.UnpicklingError("Weights only load failed: GLOBAL os.system"), ["refused", "pickle"]),
    (RecursionError("maximum recursion depth exceeded"), ["nested too deeply"]),
])
def test_environment_faults_are_one_line(capsys: pytest.CaptureFixture[str], exc: BaseException,
                                         words: list[str]) -> None:
    def action() -> int:
        raise exc

    assert run_reporting_errors("baize-tui", action) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("baize-tui: error: ")
    for word in words:
        assert word in err[0]


def test_a_bug_keeps_its_traceback() -> None:
    def action() -> int:
        raise ZeroDivisionError("a real bug")

    with pytest.raises(ZeroDivisionError):
        run_reporting_errors("baize-tui", action)


def test_sigterm_during_a_selfchat_run_saves_and_exits_143(tmp_path: Path) -> None:
    from openai_server import OpenAITestServer

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("".join(f"topic {i}\n" for i in range(50)))
    out = tmp_path / "run"
    with OpenAITestServer(reply="[Human] q [AI] a [Human] bye", latency=0.2) as server:
        proc = subprocess.Popen(
            [str(BIN), "selfchat", "run", "--seeds", str(seeds), "--out", str(out), "--model",
             "m", "--base-url", server.base_url, "--concurrency", "1"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        raw = out / "raw.jsonl"
        import time

        deadline = time.monotonic() + 60
        while not (raw.exists() and raw.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline and proc.poll() is None, "no dialogue finished"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert b"Traceback" not in err
    assert proc.returncode in (130, 143), err
    done = raw.read_text().count("\n")
    assert 2 <= done < 50  # kept what was finished; re-running resumes


def test_sigterm_inside_a_c_callback_is_delivered_again_not_lost() -> None:
    """llama.cpp logs through a ctypes callback while a model loads; an exception raised in
    one is printed and dropped by ctypes, so a SIGTERM landing there used to be lost (the
    command went on and exited 0). Now it is delivered again once C has returned."""
    import ctypes
    import time

    from baize_tui.faults import Terminated
    from baize_tui.shutdown import register_foreign_callback, termination_handlers

    calls = []

    def on_call() -> None:
        signal.raise_signal(signal.SIGTERM)  # the handler runs before this function returns
        calls.append(sum(range(1000)))

    register_foreign_callback(on_call)
    thunk = ctypes.CFUNCTYPE(None)(on_call)
    with termination_handlers(), pytest.raises(Terminated):
        thunk()  # through ctypes, like llama.cpp calling its log callback
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the re-delivered signal raises in here
            time.sleep(0.01)
    assert calls == [499500]  # the callback itself ran to its end


# -- the round-2 fault campaign's finds ----------------------------------------------------------
@pytest.mark.parametrize("args", [
    ["history", "show", "99999999999999999999999"],
    ["history", "export", "99999999999999999999999"],
    ["history", "list", "--limit", "99999999999999999999999"],
    ["history", "rename", "-5", "x"],
])
def test_out_of_range_ids_are_a_usage_error(baize_home: Path, args: list[str]) -> None:
    from hardening_helpers import tui

    out = tui(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "error: argument" in out.stderr


@pytest.mark.parametrize("make", ["fifo", "device"])
@pytest.mark.parametrize("command", ["selfchat", "sdf", "train-data", "train-config",
                                     "train-preview"])
def test_an_input_that_is_a_fifo_or_device_is_refused_not_read_forever(
        baize_home: Path, tmp_path: Path, make: str, command: str) -> None:
    import os

    from hardening_helpers import one_error, tui

    if make == "fifo":
        path = tmp_path / "input.txt"
        os.mkfifo(path)  # nobody ever writes to it: reading it would block forever
    else:
        path = Path("/dev/zero")  # reading it never ends
    url = "http://127.0.0.1:9/v1"
    args = {
        "selfchat": ["selfchat", "run", "--seeds", str(path), "--out", str(tmp_path / "o"),
                     "--model", "m", "--base-url", url],
        "sdf": ["sdf", "sample", "--prompts", str(path), "--out", str(tmp_path / "s"),
                "--model", "openai:m", "--base-url", url],
        "train-data": ["train", "run", "--base", str(tmp_path), "--data", str(path), "--out",
                       str(tmp_path / "t")],
        "train-config": ["train", "run", "--config", str(path), "--out", str(tmp_path / "t")],
        "train-preview": ["train", "preview", "--base", str(tmp_path), "--data", str(path)],
    }[command]
    out = tui(*args, timeout=60, env={"OPENAI_API_KEY": "sk-local-test"})
    one_error(out, 2, str(path), "not a regular file")
    if make == "fifo":
        assert path.is_fifo()


@pytest.mark.parametrize("flag", [["--temperature", "1e999"], ["--temperature", "nan"],
                                  ["--repeat-penalty", "inf"]])
def test_non_finite_sampling_values_are_refused_before_any_request(baize_home: Path,
                                                                   flag: list[str]) -> None:
    from hardening_helpers import one_error, tui
    from openai_server import OpenAITestServer

    with OpenAITestServer() as server:
        out = tui("ask", "-m", "openai:m", "--base-url", server.base_url, *flag, "hi",
                  env={"OPENAI_API_KEY": "sk-local-test"})
        assert server.count == 0
    one_error(out, 2, flag[0].lstrip("-").replace("-", "_"))


@pytest.mark.parametrize("extra", [["--temperature", "inf"], ["--temperature", "nan"],
                                   ["--max-cost", "nan"], ["--rpm", "1e999"]])
@pytest.mark.parametrize("command", ["selfchat", "sdf"])
def test_non_finite_numbers_are_usage_errors_for_runs(baize_home: Path, tmp_path: Path,
                                                      command: str, extra: list[str]) -> None:
    from hardening_helpers import tui

    seeds = tmp_path / "seeds.txt"
    seeds.write_text("hello\n")
    url = "http://127.0.0.1:9/v1"
    if command == "selfchat":
        args = ["selfchat", "run", "--seeds", str(seeds), "--out", str(tmp_path / "o"),
                "--model", "m", "--base-url", url, *extra]
    else:
        (tmp_path / "s").mkdir()
        args = ["sdf", "judge", str(tmp_path / "s"), "--judge", "openai:m", "--base-url", url,
                *extra]
    out = tui(*args, env={"OPENAI_API_KEY": "sk-local-test"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"argument {extra[0]}" in out.stderr and "finite" in out.stderr
