"""Hardening, self-chat: speaker labels inside turns are rejected with their own reason, the
old catch-all reason is split in three, a run that completes nothing exits non-zero, and an
export over a damaged raw.jsonl says so."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hardening_helpers import one_error, tui
from openai_server import Error, Malformed, OpenAITestServer

from baize_tui.selfchat.transcript import evaluate_turns, evaluate_v1
from baize_tui.selfchat.turn_checks import find_speaker_label


@pytest.mark.parametrize("text", [
    "Hello! How can I assist you today?\nAI\nHi! I need help.",
    "Sure thing.\nHuman\nAnd then?",
    "Sure.\nHuman: what next?",
    "Sure.\nai: more",
    "Fine. [Human] next question",
    "Fine. [|AI|] me again",
    "ok\n  HUMAN  \nx",
    "Sure.\nUser: hi",
    "Sure.\nAssistant: hello",
])
def test_turns_holding_speaker_labels_are_rejected(text: str) -> None:
    result = evaluate_turns([("A real question?", text)])
    assert result.reason in ("speaker_label_in_turn", "ai_turn_contains_human",
                             "turn_split_wrong"), result
    assert find_speaker_label(text) is not None
    assert evaluate_turns([(text, "A fine answer.")]).reason is not None


@pytest.mark.parametrize("text", [
    "The human body has 206 bones.",
    "AI research is broad; humans use it daily.",
    "Ask the assistant: it knows.",
    "I like Humane societies.\nAIs are tools.",
])
def test_ordinary_words_are_not_labels(text: str) -> None:
    assert find_speaker_label(text) is None
    assert evaluate_turns([("Q?", text)]).ok


def test_the_no_turn_reasons_are_told_apart() -> None:
    assert evaluate_v1("lorem ipsum").reason == "no_human_turn"
    assert evaluate_v1("[Human] only a question").reason == "no_ai_part"
    assert evaluate_turns([]).reason == "no_complete_turn"
    details = {evaluate_v1("lorem ipsum").detail, evaluate_v1("[Human] q").detail,
               evaluate_turns([]).detail}
    assert len(details) == 3


def seeds(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("".join(f"Topic number {i}\n" for i in range(n)))
    return path


def selfchat_run(server: OpenAITestServer, tmp_path: Path, n: int, *extra: str):  # noqa: ANN201
    out = tmp_path / "run"
    result = tui("selfchat", "run", "--seeds", str(seeds(tmp_path, n)), "--out", str(out),
                 "--model", "m", "--base-url", server.base_url, "--max-retries", "0",
                 "--concurrency", "2", *extra)
    return result, out


@pytest.mark.parametrize("action", [
    Error(500, "boom"),
    Malformed(),
    Malformed(b"<html><body>Bad gateway</body></html>", 200, "text/html"),
    "",
])
def test_a_run_that_completes_nothing_exits_non_zero(tmp_path: Path, action: object) -> None:
    with OpenAITestServer() as server:
        server.set_reply(action)  # type: ignore[arg-type]
        result, out = selfchat_run(server, tmp_path, 3)
    line = one_error(result, 1, "no dialogue completed", str(out / "failed.jsonl"))
    assert "3 attempt(s)" in line


def test_a_run_with_some_failures_says_how_many_and_where(tmp_path: Path) -> None:
    with OpenAITestServer() as server:
        server.set_reply("[Human] Hi there [AI] Hello, glad to help. [Human] bye")
        server.push(Error(400, "bad request"))
        result, out = selfchat_run(server, tmp_path, 4, "--concurrency", "1")
    assert result.returncode == 0, result.stderr
    assert "1 dialogue(s) failed or were rejected" in result.stderr
    assert str(out / "failed.jsonl") in result.stderr


def test_a_v2_run_rejects_replies_that_carry_labels(tmp_path: Path) -> None:
    with OpenAITestServer() as server:
        server.set_reply("Hello! How can I assist you today?\nAI\nHi! I am fine.\nHuman\nGood.")
        result, out = selfchat_run(server, tmp_path, 2, "--mode", "v2", "--max-turns", "1")
    one_error(result, 1, "speaker_label_in_turn")
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert {f["reason"] for f in failed} == {"speaker_label_in_turn"}
    status = tui("selfchat", "status", str(out))
    assert "speaker_label_in_turn" in status.stdout


def test_export_warns_about_damaged_raw_lines(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    good = {"id": "a", "seed": "s", "mode": "v2", "transcript": "[Human] q [AI] a"}
    (run / "raw.jsonl").write_text(json.dumps(good) + "\n{broken line\n"
                                   + json.dumps(dict(good, id="b")) + "\n")
    result = tui("selfchat", "export", str(run), "-o", str(tmp_path / "out.json"))
    assert result.returncode == 0
    assert "raw.jsonl:2" in result.stderr and "warning" in result.stderr
    assert len(json.loads((tmp_path / "out.json").read_text())) == 2


def batch_run(server, tmp_path: Path, n: int, *extra: str):  # noqa: ANN001, ANN201
    out = tmp_path / "batch-run"
    result = tui("selfchat", "run", "--batch", "--seeds", str(seeds(tmp_path, n)), "--out",
                 str(out), "--model", "m", "--base-url", server.base_url, "--poll", "0.01",
                 "--batch-attempts", "1", "--no-progress", *extra,
                 env={"OPENAI_API_KEY": "sk-local-batch-test"})
    return result, out


@pytest.mark.parametrize("action", [
    Error(500, "boom"),
    Malformed(),
    "",
    "Hello there!\nHuman\nthen what?",
])
def test_a_batch_run_that_completes_nothing_exits_non_zero(tmp_path: Path,
                                                           action: object) -> None:
    from batch_server import BatchTestServer

    with BatchTestServer(lambda body: action) as server:
        result, out = batch_run(server, tmp_path, 3)
    line = one_error(result, 1, "no dialogue completed", str(out / "failed.jsonl"))
    assert "3 attempt(s)" in line and "most common" in line
    assert (out / "failed.jsonl").read_text().count("\n") == 3


def test_a_batch_run_with_some_failures_exits_zero_and_says_where(tmp_path: Path) -> None:
    from batch_server import BatchTestServer

    good = "[Human] Hi there [AI] Hello, glad to help. [Human] bye"
    with BatchTestServer(lambda body: Error(500, "boom") if "number 1" in json.dumps(body)
                         else good) as server:
        result, out = batch_run(server, tmp_path, 3)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 dialogue(s) failed or were rejected" in result.stderr
    assert str(out / "failed.jsonl") in result.stderr
