"""SDF judging: the strict parser, the shuffle and tie rule, and the judge runner against a
real OpenAI-compatible server on 127.0.0.1 (scripted scores, malformed replies, 429s)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai_server import Error, Malformed, OpenAITestServer, Reply
from sdf_helpers import (
    expected_best,
    read_jsonl,
    scripted_judge,
    shown_answers,
    text_score,
    write_candidates,
)

from baize_tui.cli import main
from baize_tui.sdf import judge as jd

SECRET = "sk-test-SECRET-77ab0c1d"


# -- parser ------------------------------------------------------------------------------------
def test_parse_reads_strict_lines_and_tolerates_markup() -> None:
    reply = "Here are my scores:\n**Answer 1:** 85\nAnswer 2 = 40/100\n- Answer 3: 100\nanswer 4: 1"
    assert jd.parse_scores(reply, 4) == [85, 40, 100, 1]


@pytest.mark.parametrize(("reply", "reason"), [
    ("They are all fine.", "no_scores"),
    ("Answer 1: 80\nAnswer 2: 70", "missing_scores"),
    ("Answer 1: 80\nAnswer 2: 0\nAnswer 3: 5", "out_of_range"),
    ("Answer 1: 80\nAnswer 2: 170\nAnswer 3: 5", "out_of_range"),
    ("Answer 1: 80\nAnswer 2: 7.5\nAnswer 3: 5", "not_whole"),
    ("Answer 1: 80\nAnswer 1: 60\nAnswer 2: 7\nAnswer 3: 5", "conflicting"),
    ("Answer 1: 80\nAnswer 2: 60\nAnswer 3: 7\nAnswer 4: 5", "unknown_answer"),
])
def test_parse_failures_name_their_reason(reply: str, reason: str) -> None:
    with pytest.raises(jd.ParseError) as info:
        jd.parse_scores(reply, 3)
    assert info.value.reason == reason


def test_shuffle_is_deterministic_per_seed_and_prompt() -> None:
    orders = {pid: jd.shuffle_order(4, jd.shuffle_seed(0, pid)) for pid in map(str, range(50))}
    again = {pid: jd.shuffle_order(4, jd.shuffle_seed(0, pid)) for pid in map(str, range(50))}
    assert orders == again
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 8  # really shuffled
    assert sum(o[0] for o in orders.values()) > 0  # candidate 0 is not always shown first
    other_seed = {pid: jd.shuffle_order(4, jd.shuffle_seed(1, pid)) for pid in orders}
    assert other_seed != orders
    shown = [70, 10, 90, 40]
    for order in orders.values():
        scores = jd.unshuffle(shown, order)
        assert [scores[i] for i in order] == shown


def test_tie_goes_to_the_candidate_sampled_first() -> None:
    assert jd.pick_best([50, 90, 30, 90]) == jd.Verdict(best=1, score=90, tied=(1, 3))
    assert jd.pick_best([90, 90, 90, 90]).best == 0
    assert jd.pick_best([10, 20, 30, 40]) == jd.Verdict(best=3, score=40, tied=(3,))


# -- the judge runner over HTTP ---------------------------------------------------------------
def judge_args(out: Path, server: OpenAITestServer, *extra: str) -> list[str]:
    return ["sdf", "judge", str(out), "--judge", "openai:judge-model", "--base-url",
            server.base_url, "--concurrency", "4", "--no-progress", *extra]


def check_verdicts(out: Path, recs: list[dict]) -> list[dict]:
    verdicts = read_jsonl(out / "judgments.jsonl")
    by_id = {v["id"]: v for v in verdicts}
    assert len(by_id) == len(verdicts), "duplicate verdicts"
    for rec in recs:
        v = by_id[rec["id"]]
        texts = [c["text"] for c in rec["candidates"]]
        assert v["scores"] == [text_score(t) for t in texts]
        assert v["best"] == expected_best(texts)
        assert v["order"] == jd.shuffle_order(len(texts), v["shuffle_seed"])
    return verdicts


def test_judge_picks_the_best_through_429s_and_bad_replies(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    out = tmp_path / "run"
    recs = write_candidates(out, 12)
    with OpenAITestServer(scripted_judge, latency=0.01) as server:
        server.push(Error.rate_limit(retry_after=0.05), Malformed(), "I liked them all.",
                    Error(500))
        code = main(judge_args(out, server))
        bodies = [r.body for r in server.requests if r.body]
    assert code == 0, capsys.readouterr().err
    check_verdicts(out, recs)
    # one reply without scores was answered with a correction and asked again
    corrections = [b for b in bodies if len(b["messages"]) == 4]
    assert len(corrections) == 1 and "could not be read (no_scores" in corrections[0]["messages"][3]["content"]
    # every prompt was shown shuffled as recorded, and position 1 is not always candidate 0
    firsts = Counter()
    for v in read_jsonl(out / "judgments.jsonl"):
        rec = next(r for r in recs if r["id"] == v["id"])
        firsts[v["order"][0]] += 1
        assert all(c["text"] for c in rec["candidates"])
    assert len(firsts) > 1
    # the key never reaches disk
    for path in out.iterdir():
        assert SECRET not in path.read_text(errors="replace"), path
    capsys.readouterr()
    assert main(["sdf", "status", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["judged"] == 12 and info["judge_failed"] == 0
    assert sum(info["best_histogram"].values()) == 12
    assert sum(info["score_histogram"].values()) == 48
    assert info["judge_tokens_in"] > 0


def test_unreadable_judge_replies_are_recorded_with_the_reason(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    recs = write_candidates(out, 3)
    bad_id = recs[1]["id"]

    def judge(body: dict) -> str:
        if recs[1]["prompt"] in body["messages"][1]["content"]:
            return "\n".join(f"Answer {k}: 250" for k in range(1, 5))
        return scripted_judge(body)

    with OpenAITestServer(judge) as server:
        assert main(judge_args(out, server, "--parse-retries", "1")) == 0
        assert server.count == 2 + 2  # two good prompts, the bad one asked twice
    failed = read_jsonl(out / "judge_failed.jsonl")
    assert [f["id"] for f in failed] == [bad_id]
    assert failed[0]["reason"] == "parse_out_of_range" and "250" in failed[0]["reply"]
    assert {v["id"] for v in read_jsonl(out / "judgments.jsonl")} == {recs[0]["id"], recs[2]["id"]}
    capsys.readouterr()
    assert main(["sdf", "status", str(out)]) == 0
    text = capsys.readouterr().out
    assert "judge failures: parse_out_of_range 1" in text
    assert "cost unknown (no price for this judge: add it under [selfchat.prices]" in text
    # a re-run asks again only for the failed prompt (parse failures are retryable)
    with OpenAITestServer(scripted_judge) as server:
        assert main(judge_args(out, server)) == 0
        assert server.count == 1
    check_verdicts(out, recs)


def test_export_writes_the_best_reply_per_prompt(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    recs = write_candidates(out, 5)
    with OpenAITestServer(scripted_judge) as server:
        assert main(judge_args(out, server)) == 0
    # judge calls finish in any order: the export follows the sampled order regardless
    judged = out / "judgments.jsonl"
    judged.write_text("".join(reversed(judged.read_text().splitlines(keepends=True))))
    best = tmp_path / "best.jsonl"
    assert main(["sdf", "export", str(out), "-o", str(best)]) == 0
    rows = read_jsonl(best)
    assert [row["messages"][0]["content"] for row in rows] == [r["prompt"] for r in recs]
    for row in rows:
        rec = next(r for r in recs if r["prompt"] == row["messages"][0]["content"])
        texts = [c["text"] for c in rec["candidates"]]
        assert row["messages"][1] == {"role": "assistant", "content": texts[expected_best(texts)]}
    from baize_tui.train.data import load_dialogues

    loaded = load_dialogues([best])
    assert len(loaded.dialogues) == 5
    top = max(max(text_score(c["text"]) for c in r["candidates"]) for r in recs)
    assert main(["sdf", "export", str(out), "-o", str(tmp_path / "b.json"), "--format", "baize",
                 "--min-score", str(top)]) == 0
    kept = json.loads((tmp_path / "b.json").read_text())
    assert 1 <= len(kept) < 5 and all(k["input"].startswith("The conversation") for k in kept)


def test_bad_judge_spec_and_missing_dir_are_usage_errors(tmp_path: Path, capsys) -> None:
    assert main(["sdf", "judge", str(tmp_path / "nope"), "--judge", "openai:m",
                 "--base-url", "http://127.0.0.1:9/v1"]) == 2
    assert "no such SDF run directory" in capsys.readouterr().err
    write_candidates(tmp_path / "run", 1)
    assert main(["sdf", "judge", str(tmp_path / "run"), "--judge", "gpt-4o"]) == 2
    assert "expected openai:MODEL" in capsys.readouterr().err


def test_judge_resumes_after_sigkill_without_duplicates_or_losses(tmp_path: Path) -> None:
    out = tmp_path / "run"
    recs = write_candidates(out, 40)
    env = dict(os.environ, BAIZE_HOME=str(tmp_path / "home"), OPENAI_API_KEY=SECRET)
    with OpenAITestServer(scripted_judge, latency=0.05) as server:
        args = [sys.executable, "-m", "baize_tui.cli", *judge_args(out, server)]
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        path = out / "judgments.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if path.exists() and path.read_bytes().count(b"\n") >= 8:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        done_before = path.read_bytes().count(b"\n")
        assert 8 <= done_before < 40, "the judge was not killed halfway"
        with path.open("ab") as fh:  # a write torn by the kill
            fh.write(b'{"id": "torn", "scores": [1')
        before = server.count
        run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        asked_again = server.count - before
    verdicts = check_verdicts(out, recs)
    assert len(verdicts) == 40 and {v["id"] for v in verdicts} == {r["id"] for r in recs}
    assert asked_again <= 40 - done_before + 4  # only unfinished prompts (plus in-flight ones)


def test_shown_answers_helper_matches_the_prompt() -> None:
    body = {"messages": jd.judge_messages("Q?", ["a\nb", "c"])}
    assert shown_answers(body) == ["a\nb", "c"]
    assert Reply  # imported for symmetry with other server tests


def test_watcher_reads_only_new_complete_lines_and_survives_a_cut_tail(tmp_path: Path) -> None:
    from baize_tui.sdf.status import RunWatcher

    out = tmp_path / "run"
    recs = write_candidates(out, 6)
    path = out / "candidates.jsonl"
    full = path.read_bytes()
    cut = full.index(b"\n", len(full) // 2) + 10  # in the middle of a line
    path.write_bytes(full[:cut])
    watcher = RunWatcher(out).poll()
    done = full[:cut].count(b"\n")
    assert watcher.summary()["sampled"] == done
    assert watcher.candidates_at(done - 1)["id"] == recs[done - 1]["id"]
    path.write_bytes(full)  # the torn line completed, more appended
    assert watcher.poll().summary()["sampled"] == 6
    assert watcher.candidates_at(5)["prompt"] == recs[5]["prompt"]
    path.write_bytes(full[: full.index(b"\n") + 1])  # shrank (a resume cut it): re-read
    assert watcher.poll().summary()["sampled"] == 1


def test_a_busy_directory_is_refused_with_sdf_wording(tmp_path: Path, capsys) -> None:
    from baize_tui.sdf.store import CandidateStore

    out = tmp_path / "run"
    write_candidates(out, 2)
    holder = CandidateStore(out)
    try:
        assert main(["sdf", "judge", str(out), "--judge", "openai:j", "--base-url",
                     "http://127.0.0.1:9/v1"]) == 2
        assert "another `sdf sample`, `sdf judge` or `sdf run` is writing here" in capsys.readouterr().err
    finally:
        holder.close()


def test_the_commands_restore_the_signal_handlers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    write_candidates(out, 2)
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with OpenAITestServer(scripted_judge) as server:
        assert main(judge_args(out, server)) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_background_process_control_with_a_relative_directory(tmp_path: Path, monkeypatch) -> None:
    from baize_tui.sdf import process

    monkeypatch.chdir(tmp_path)
    out = Path("rel-run")
    argv = [sys.executable, "-c", "import time; time.sleep(120)", "baize_tui.cli",
            str(out.absolute())]  # stands in for `sdf run` (same cmdline markers)
    process.start(out, argv)
    try:
        assert process.alive(out) and process.alive(tmp_path / "rel-run")
        assert not process.alive(tmp_path / "other")
        assert process.pause(out)
        deadline = time.monotonic() + 10
        while not process.paused(out) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert process.paused(out)
        assert process.resume(out)
        while process.paused(out) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not process.paused(out)
    finally:
        assert process.stop(out)
        deadline = time.monotonic() + 10
        while process.alive(out) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert not process.alive(out) and not process.stop(out)


def test_judging_again_with_other_settings_is_refused_unless_forced(tmp_path: Path,
                                                                   capsys) -> None:
    out = tmp_path / "run"
    write_candidates(out, 2)
    with OpenAITestServer(scripted_judge) as server:
        assert main(judge_args(out, server)) == 0
        capsys.readouterr()
        other = ["sdf", "judge", str(out), "--judge", "openai:another-judge", "--base-url",
                 server.base_url, "--no-progress"]
        assert main(other) == 2
        err = capsys.readouterr().err
        assert "judged with other settings" in err
        assert "judge 'judge-model' -> 'another-judge'" in err
        assert main([*other, "--force"]) == 0
