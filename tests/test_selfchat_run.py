"""The self-chat runner and CLI against a real OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from openai_server import Drop, Error, Malformed, OpenAITestServer, Reply

from baize_tui.selfchat.run import open_run, run_selfchat, summarize
from baize_tui.selfchat.runner import FatalRunError, RunConfig
from baize_tui.selfchat.seeds import load_seeds, seed_id

SECRET = "sk-test-SECRET-6f1d2c9a"
TOPIC = re.compile(r"topic: '(.*)'\. Human statements", re.S)


def scripted(body: dict) -> str:
    """A well-formed v1 transcript about the seed found in the prompt."""
    seed = TOPIC.search(body["messages"][-1]["content"]).group(1)
    return (f"[Human] Tell me about {seed}.\n[AI] {seed} is a fine topic.\n"
            f"[Human] Why?\n[AI] Because of {seed}.\n[Human] Thanks!")


@pytest.fixture
def server():
    with OpenAITestServer(scripted, latency=0.01) as srv:
        yield srv


def make_seeds(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("\n".join(f"Question number {i}?" for i in range(n)) + "\n", encoding="utf-8")
    return path


def run_once(srv: OpenAITestServer, tmp_path: Path, seeds_file: Path, **kw):
    out = kw.pop("out", tmp_path / "out")
    cfg = RunConfig(model="test-model", base_url=srv.base_url, backoff_base=0.05,
                    backoff_cap=0.5, **kw)
    seeds = load_seeds(str(seeds_file))
    store = open_run(out, cfg, seeds)
    return run_selfchat(cfg, seeds, store, api_key=SECRET), out, seeds


def raw_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "raw.jsonl").read_text().splitlines()]


def test_every_seed_once_with_retries_counted(server: OpenAITestServer, tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 30)
    server.push(Error(500), Drop(), Malformed(), Error(503), Reply("x", latency=2.0))
    stats, out, seeds = run_once(server, tmp_path, seeds_file, concurrency=4, timeout=0.5)
    ids = raw_ids(out)
    assert sorted(ids) == sorted(s.id for s in seeds) and len(ids) == len(set(ids)) == 30
    assert stats.done == 30 and stats.failed == stats.rejected == 0
    assert stats.retries == 5  # 500, drop, malformed, 503, timeout
    assert server.count == 35
    rec = json.loads((out / "raw.jsonl").read_text().splitlines()[0])
    assert rec["turns"] == [[f"Tell me about {rec['seed']}.", f"{rec['seed']} is a fine topic."],
                            ["Why?", f"Because of {rec['seed']}."]]
    assert rec["mode"] == "v1" and rec["usage"]["calls"] == 1 and rec["finish_reasons"] == ["stop"]
    body = server.requests[-1].body
    assert set(body) == {"model", "messages"}  # API defaults, like Baize
    assert server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert "retry" in (out / "events.log").read_text()


def test_429_retry_after_pauses_every_worker(server: OpenAITestServer, tmp_path: Path) -> None:
    server.latency = 0.05
    server.push(Reply("warm-up"), Error.rate_limit(retry_after=0.6, ms=False))
    stats, out, _ = run_once(server, tmp_path, make_seeds(tmp_path, 12), concurrency=4)
    assert stats.rate_limited == 1 and stats.retries == 1 and len(raw_ids(out)) == 11
    # "warm-up" has no turn: rejected, and re-running would not retry it by default
    assert stats.rejected == 1 and stats.reasons["no_human_turn"] == 1
    (limited,) = [r for r in server.requests if r.status == 429]
    assert limited.answered is not None
    t429 = limited.answered  # when the 429 went back to the client
    # Requests sent before the 429 reached the client may still arrive a little after it.
    later = [r.time for r in server.requests if r.time > t429 + 0.1]
    assert later, "nobody sent a request after the 429"
    assert min(later) >= t429 + 0.6  # Retry-After (0.6 s, sent as "1") honoured by every worker


def test_permanent_errors(server: OpenAITestServer, tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 6)
    server.push(Error(400, "maximum context length exceeded", code="context_length_exceeded"))
    stats, out, _ = run_once(server, tmp_path, seeds_file, concurrency=1)
    assert stats.failed == 1 and stats.done == 5 and stats.retries == 0 and server.count == 6
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert failed[0]["reason"] == "http_400" and failed[0]["retryable"] is False
    # resume: the 400 is not retried by default ...
    count = server.count
    stats2, _, _ = run_once(server, tmp_path, seeds_file, concurrency=1)
    assert server.count == count and stats2.previously_done == 5
    # ... but is with retry_rejected
    stats3, _, _ = run_once(server, tmp_path, seeds_file, concurrency=1, retry_rejected=True)
    assert stats3.done == 1 and len(raw_ids(out)) == 6

    # a bad key stops the whole run, reported once, nothing recorded per seed
    server.set_reply(Error(401, "Incorrect API key provided"))
    with pytest.raises(FatalRunError, match="OPENAI_API_KEY") as info:
        run_once(server, tmp_path, seeds_file, concurrency=3, out=tmp_path / "o401")
    assert SECRET not in str(info.value)
    assert server.count - count - 1 <= 3
    assert not (tmp_path / "o401" / "failed.jsonl").exists()


def test_retries_exhausted_then_resume_retries_failed(server: OpenAITestServer, tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 5)
    server.push(*[Error(502)] * 3)
    stats, out, seeds = run_once(server, tmp_path, seeds_file, concurrency=1, max_retries=2)
    assert stats.failed == 1 and stats.reasons["retries_exhausted"] == 1 and stats.done == 4
    assert summarize(out)["failed"] == 1
    stats2, _, _ = run_once(server, tmp_path, seeds_file, concurrency=1, max_retries=2)
    assert stats2.done == 1 and stats2.previously_done == 4
    assert sorted(raw_ids(out)) == sorted(s.id for s in seeds)
    info = summarize(out)
    assert info["done"] == 5 and info["failed"] == 0 and info["remaining"] == 0


def test_gibberish_is_rejected_with_reasons(server: OpenAITestServer, tmp_path: Path) -> None:
    server.set_reply(lambda body: "lorem ipsum dolor sit amet")
    stats, out, _ = run_once(server, tmp_path, make_seeds(tmp_path, 4), concurrency=2)
    assert stats.rejected == 4 and stats.reasons == Counter({"no_human_turn": 4})
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert {f["kind"] for f in failed} == {"rejected"}
    assert failed[0]["transcript"] == "lorem ipsum dolor sit amet"
    assert not (out / "raw.jsonl").exists() or raw_ids(out) == []


def test_v2_mode_per_turn_calls(server: OpenAITestServer, tmp_path: Path) -> None:
    def reply(body: dict) -> Reply:
        if body.get("stop") == ["[AI]"]:
            n = body["messages"][0]["content"].count("\n[Human] ") - 1  # the template has one
            return Reply(f" Question {n}? ", usage={"prompt_tokens": 10, "completion_tokens": 2})
        return Reply(f"Answer to {body['messages'][-1]['content']}",
                     usage={"prompt_tokens": 5, "completion_tokens": 3})

    server.set_reply(reply)
    stats, out, _ = run_once(server, tmp_path, make_seeds(tmp_path, 3), mode="v2", max_turns=2,
                             concurrency=2)
    assert stats.done == 3 and server.count == 12
    rec = json.loads((out / "raw.jsonl").read_text().splitlines()[0])
    assert rec["transcript"] == ("[Human] Question 1?\n[AI] Answer to Question 1?\n"
                                 "[Human] Question 2?\n[AI] Answer to Question 2?")
    assert rec["usage"]["by_role"] == {"human": {"prompt_tokens": 20, "completion_tokens": 4},
                                       "ai": {"prompt_tokens": 10, "completion_tokens": 6}}
    human_reqs = [r.body for r in server.requests if r.body.get("stop")]
    assert all(b["messages"][0]["content"].endswith("\n[Human] ") for b in human_reqs)
    ai_reqs = [r.body for r in server.requests if not r.body.get("stop")]
    assert max(len(b["messages"]) for b in ai_reqs) == 3
    assert [m["role"] for m in max(ai_reqs, key=lambda b: len(b["messages"]))["messages"]] == [
        "user", "assistant", "user"]


def test_budgets_stop_cleanly(server: OpenAITestServer, tmp_path: Path) -> None:
    server.set_reply(lambda body: Reply(scripted(body), usage={"prompt_tokens": 150,
                                                              "completion_tokens": 50}))
    seeds_file = make_seeds(tmp_path, 20)
    stats, out, _ = run_once(server, tmp_path, seeds_file, concurrency=3, max_tokens_total=1000)
    assert "token budget" in stats.stop_reason
    assert stats.tokens <= 1000 + 2 * 200 and 3 <= stats.done <= 7
    assert len(raw_ids(out)) == stats.done  # what ran was saved
    # resuming counts what was already spent
    before = server.count
    stats2, _, _ = run_once(server, tmp_path, seeds_file, concurrency=3, max_tokens_total=1000)
    assert server.count == before and stats2.done == 0

    stats3, _, _ = run_once(server, tmp_path, seeds_file, concurrency=1, max_cost=0.01,
                            price=(10.0, 10.0), out=tmp_path / "cost")  # $0.002 a dialogue
    assert "cost budget" in stats3.stop_reason and stats3.done == 5
    assert stats3.cost == pytest.approx(0.01)


def granted_times(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the run's rate limiter let each request go (filled in as the run goes).

    Measured at the client, where the limiter acts: the test server shares this process, so a
    long pause of it (a full garbage collection late in the suite) can hold paced requests and
    then receive them all at once."""
    from baize_tui.selfchat.runner.client import RateLimiter

    granted: list[float] = []
    acquire = RateLimiter.acquire

    async def timed(self: RateLimiter, tokens: int) -> None:
        await acquire(self, tokens)
        granted.append(time.monotonic())

    monkeypatch.setattr(RateLimiter, "acquire", timed)
    return granted


def test_rpm_and_tpm_limits_pace_requests(server: OpenAITestServer, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    server.latency = 0.0
    granted = granted_times(monkeypatch)
    stats, _, _ = run_once(server, tmp_path, make_seeds(tmp_path, 20), concurrency=8, rpm=600)
    # a bucket of 10 refilled at 10/s: 10 at once, then one per 0.1 s, so the 20th goes at
    # least 1 s after the first however the machine stalls (and not many seconds later)
    assert stats.done == 20 and server.count == 20 and len(granted) == 20
    assert 1.0 - 0.02 <= granted[-1] - granted[0] <= 5.0
    server.clear()
    granted.clear()
    server.set_reply(lambda body: Reply(scripted(body), usage={"prompt_tokens": 400,
                                                              "completion_tokens": 100}))
    stats2, _, _ = run_once(server, tmp_path, make_seeds(tmp_path, 6), concurrency=4,
                            tpm=60_000, out=tmp_path / "tpm")  # 1,000 tokens/s, 500 a call
    assert stats2.done == 6 and len(granted) == 6 and granted[-1] - granted[0] >= 1.0


# ------------------------------------------------------------------------------ the CLI
def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baize_tui.cli", *args], capture_output=True,
                          text=True, env=env, timeout=60, **kw)


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, OPENAI_API_KEY=SECRET, BAIZE_HOME=str(tmp_path / "home"))
    env.pop("OPENAI_BASE_URL", None)
    return env


def test_cli_run_status_export_and_no_key_leak(server: OpenAITestServer, tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 10)
    out = tmp_path / "run"
    env = cli_env(tmp_path)
    server.push(Error.rate_limit(retry_after=0.2), Error(500, f"oops, you sent {SECRET}"),
                Error(400, f"bad request (injected), key {SECRET}"))
    p = cli("selfchat", "run", "--seeds", str(seeds_file), "--out", str(out), "--model", "m",
            "--base-url", server.base_url, "--concurrency", "3", "--max-cost", "1", env=env)
    assert p.returncode == 0, p.stderr
    assert "9/10 done" in p.stdout and "1 failed" in p.stdout
    assert "no price known" in p.stderr  # said once
    assert p.stderr.count("no price known") == 1
    st = cli("selfchat", "status", str(out), "--json", env=env)
    info = json.loads(st.stdout)
    assert info["done"] == 9 and info["failed"] == 1 and info["reasons"] == {"http_400": 1}
    for fmt, name in (("baize", "d.json"), ("messages", "d.jsonl")):
        ex = cli("selfchat", "export", str(out), "--format", fmt, "-o", str(tmp_path / name), env=env)
        assert ex.returncode == 0 and "wrote 9" in ex.stdout
    # the key went to the server, and nowhere else
    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in server.requests)
    texts = [p.stdout, p.stderr, st.stdout]
    texts += [f.read_text(encoding="utf-8") for f in [*out.iterdir(), tmp_path / "d.json",
                                                      tmp_path / "d.jsonl"] if f.is_file()]
    assert len(texts) >= 8 and not any(SECRET in t for t in texts)

    bad = cli("selfchat", "run", "--seeds", str(seeds_file), "--out", str(out), "--model", "other",
              "--base-url", server.base_url, env=env)
    assert bad.returncode == 2 and "other settings" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_cli_unauthorized_is_one_line(server: OpenAITestServer, tmp_path: Path) -> None:
    server.set_reply(Error(401, "Incorrect API key provided: sk-test-***"))
    p = cli("selfchat", "run", "--seeds", str(make_seeds(tmp_path, 3)), "--out",
            str(tmp_path / "o"), "--model", "m", "--base-url", server.base_url,
            "--no-progress", env=cli_env(tmp_path))
    assert p.returncode == 1
    errors = [line for line in p.stderr.splitlines() if line.startswith("baize-tui: error:")]
    assert len(errors) == 1 and "OPENAI_API_KEY" in errors[0] and "Traceback" not in p.stderr
    assert SECRET not in p.stdout + p.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_kill_halfway_then_resume(server: OpenAITestServer, tmp_path: Path, sig: int) -> None:
    server.latency = 0.05
    n = 60
    seeds_file = make_seeds(tmp_path, n)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "baize_tui.cli", "selfchat", "run", "--seeds", str(seeds_file),
            "--out", str(out), "--model", "m", "--base-url", server.base_url, "--concurrency", "4",
            "--no-progress"]
    proc = subprocess.Popen(args, env=cli_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    raw = out / "raw.jsonl"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if raw.exists() and raw.read_bytes().count(b"\n") >= 12:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    before = raw.read_bytes()
    done_before = before.count(b"\n")
    assert 12 <= done_before < n, "the run was not interrupted halfway"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "resume" in stderr
    else:
        # a crash mid-write leaves half a line: it must be detected and dropped
        with raw.open("ab") as fh:
            fh.write(b'{"id": "torn", "seed": "half a rec')
        before_with_torn = raw.read_bytes()
        assert before_with_torn.startswith(before)
    p = subprocess.run(args, env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    ids = raw_ids(out)
    expected = {seed_id(f"Question number {i}?") for i in range(n)}
    assert len(ids) == len(set(ids)) == n and set(ids) == expected  # no duplicates, no loss
    assert raw.read_bytes().startswith(before)  # earlier lines untouched
    assert f"{done_before} earlier" in p.stdout
    # every seed was asked at least once; re-done ones only if they were in flight at the kill
    # (a request the kill cut off mid-send reaches the server without a parsable body)
    asked = Counter(TOPIC.search(r.body["messages"][0]["content"]).group(1)
                    for r in server.requests if isinstance(r.body, dict))
    assert len(asked) == n and sum(asked.values()) - n <= 4


def test_retry_after_and_reset_parsing() -> None:
    from email.utils import formatdate

    from baize_tui.selfchat.runner import parse_duration, parse_retry_after

    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    when = parse_retry_after({"retry-after": formatdate(time.time() + 30, usegmt=True)})
    assert 25 <= when <= 31
    assert parse_retry_after({"retry-after": "soon"}) is None and parse_retry_after({}) is None
    assert parse_duration("6m0s") == 360 and parse_duration("20ms") == 0.02
    assert parse_duration("1.5s") == 1.5 and parse_duration("") is None


def test_ratelimit_headers_and_quota(server: OpenAITestServer, tmp_path: Path) -> None:
    server.push(Reply("[Human] Q\n[AI] A\n[Human] bye", headers={"x-ratelimit-remaining-requests": "0",
                                         "x-ratelimit-reset-requests": "400ms"}))
    stats, _, _ = run_once(server, tmp_path, make_seeds(tmp_path, 3), concurrency=1)
    times = [r.time for r in server.requests]
    assert stats.done == 3 and times[1] - times[0] >= 0.4
    server.set_reply(Error(429, "You exceeded your current quota", code="insufficient_quota"))
    with pytest.raises(FatalRunError, match="insufficient_quota"):
        run_once(server, tmp_path, make_seeds(tmp_path, 3), concurrency=2, out=tmp_path / "q")
