"""Self-chat through the Batch API: the real openai client against tests/batch_server.py."""

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
from batch_server import BatchTestServer, JobPlan
from openai_server import Error, Malformed, OpenAITestServer

from baize_tui.selfchat.batch import BatchOptions, BatchRunner
from baize_tui.selfchat.export import export_run
from baize_tui.selfchat.run import open_run, run_selfchat, summarize
from baize_tui.selfchat.runner import RunConfig
from baize_tui.selfchat.seeds import load_seeds, seed_id

SECRET = "sk-test-SECRET-batch-77e1"
TOPIC = re.compile(r"topic: '(.*)'\. Human statements", re.S)


def replies(body: dict) -> str:
    """Deterministic replies for v1 transcripts and v2 human/AI turns (seed-dependent)."""
    first = body["messages"][0]["content"]
    seed = m.group(1) if (m := TOPIC.search(first)) else ""
    if body.get("stop") == ["[AI]"]:
        n = first.count("\n[Human] ") - 1  # the template holds one
        if seed.endswith("3?") and n == 2:
            return " "  # this simulated human has no more questions: the dialogue ends
        return f" Question {n} about {seed} "
    if len(body["messages"]) == 1 and seed:
        return (f"[Human] Tell me about {seed}\n[AI] {seed} is a fine topic.\n"
                f"[Human] Why?\n[AI] Because of {seed}\n[Human] Thanks!")
    return f"Answer to: {body['messages'][-1]['content']} (turn {len(body['messages']) // 2})"


class Flaky:
    """``replies`` with scripted failures on the first try of chosen seeds."""

    def __init__(self, failures: dict[str, object]) -> None:
        self.failures = dict(failures)

    def __call__(self, body: dict) -> object:
        text = json.dumps(body["messages"])
        for needle in list(self.failures):
            if needle in text:
                return self.failures.pop(needle)
        return replies(body)


def make_seeds(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("".join(f"Question number {i}?\n" for i in range(n)), encoding="utf-8")
    return path


def live_export(tmp_path: Path, seeds_file: Path, **kw) -> tuple[bytes, bytes]:
    """The live runner's exports for the same seeds and replies (concurrency 1: seed order)."""
    with OpenAITestServer(replies) as srv:
        cfg = RunConfig(model="test-model", base_url=srv.base_url, concurrency=1, **kw)
        seeds = load_seeds(str(seeds_file))
        run_selfchat(cfg, seeds, open_run(tmp_path / "live", cfg, seeds), api_key=SECRET)
    return exports(tmp_path / "live", tmp_path / "live-export")


def exports(run_dir: Path, dest: Path) -> tuple[bytes, bytes]:
    dest.mkdir(exist_ok=True)
    export_run(run_dir, "baize", dest / "d.json")
    export_run(run_dir, "messages", dest / "d.jsonl")
    return (dest / "d.json").read_bytes(), (dest / "d.jsonl").read_bytes()


def batch_run(srv: BatchTestServer, out: Path, seeds_file: Path, options: BatchOptions | None = None,
              events: list | None = None, **kw):
    cfg = RunConfig(model="test-model", base_url=srv.base_url, **kw)
    seeds = load_seeds(str(seeds_file))
    store = open_run(out, cfg, seeds)
    runner = BatchRunner(cfg, seeds, store, api_key=SECRET,
                         options=options or BatchOptions(poll_interval=0.0),
                         on_event=None if events is None else events.append)
    try:
        return runner.run(), seeds
    finally:
        store.close()


def raw_ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "raw.jsonl").read_text().splitlines()]


def test_v1_batch_with_injected_errors_matches_live_export(tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 12)
    live = live_export(tmp_path, seeds_file)
    flaky = Flaky({"Question number 1?": Error(500, "overloaded"),
                   "Question number 2?": Malformed(b'{"truncated": '),
                   "Question number 4?": Error(429, "slow down")})
    with BatchTestServer(flaky) as srv:
        srv.plan(JobPlan(expire_after=9, unknown_ids=2, garbage_lines=1))
        events: list = []
        stats, seeds = batch_run(srv, tmp_path / "b", seeds_file, events=events)
        assert stats.done == 12 and stats.failed == stats.rejected == 0
        # step 1: 12 requests, 3 expired + 3 failed rows (500, malformed, 429); step 2: those 6
        assert len(srv.batches) == 2 and len(srv.submitted) == 18
        counts = Counter(srv.submitted)
        assert all(c <= 2 for c in counts.values()) and sum(c == 2 for c in counts.values()) == 6
    assert exports(tmp_path / "b", tmp_path / "b-export") == live
    assert sorted(raw_ids(tmp_path / "b")) == sorted(s.id for s in seeds)
    assert stats.warnings["result for an unknown custom_id"] == 2
    assert stats.warnings["unparsable result line"] == 2  # the Malformed row and a garbage line
    info = summarize(tmp_path / "b")
    assert info["done"] == 12 and info["batch"]["steps"] == 2
    assert [j["status"] for j in info["batch"]["jobs"]] == ["expired", "completed"]
    assert any("expired" in e.message for e in events)
    results = [json.loads(x) for x in (tmp_path / "b" / "batch_results.jsonl").read_text().splitlines()]
    reasons = Counter(r["reason"] for r in results if not r["ok"])
    # the row whose line was unparsable has no result: retried like the expired ones
    assert reasons == {"batch_expired": 4, "http_500": 1, "http_429": 1}


def test_v2_rounds_with_expiring_job_and_permanent_error(tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 10)
    live = live_export(tmp_path, seeds_file, mode="v2", max_turns=3)
    with BatchTestServer(replies) as srv:
        srv.plan(JobPlan(), JobPlan(), JobPlan(expire_after=5))  # step 3 expires half done
        stats, seeds = batch_run(srv, tmp_path / "b", seeds_file, mode="v2", max_turns=3)
        roles = Counter(cid.rsplit(":", 1)[1] for cid in srv.submitted)
        steps = [Counter(c.split(":", 2)[1] + c[-1] for c in
                         [json.loads(x)["custom_id"] for x in srv.files[b.obj["input_file_id"]].data.splitlines()])
                 for b in srv.batches.values()]
    # seed 3's human quits in round 2 (an empty turn); step 3 expired half done
    assert stats.done == 10 and exports(tmp_path / "b", tmp_path / "b-export") == live
    assert len(steps) == 2 * 3 + 1  # one extra step for the expired rows
    assert steps[0] == {"0h": 10} and steps[1] == {"0a": 10} and steps[2] == {"1h": 10}
    assert roles["h"] == 10 + 10 + 9 + 5 and roles["a"] == 10 + 9 + 9
    rec = json.loads((tmp_path / "b" / "raw.jsonl").read_text().splitlines()[3])
    assert rec["seed"] == "Question number 3?" and rec["termination"] == "human_done"
    assert rec["usage"]["calls"] == 3 and set(rec["usage"]["by_role"]) == {"human", "ai"}
    assert raw_ids(tmp_path / "b") == [s.id for s in seeds]  # seed order, like a live run

    # a 400 on a row fails that dialogue once, not retried (like a live 400)
    flaky = Flaky({"Question number 6?": Error(400, "context_length_exceeded")})
    with BatchTestServer(flaky) as srv:
        stats, _ = batch_run(srv, tmp_path / "c", seeds_file, mode="v2", max_turns=1)
        assert stats.done == 9 and stats.failed == 1 and len(srv.batches) == 2
    failed = [json.loads(x) for x in (tmp_path / "c" / "failed.jsonl").read_text().splitlines()]
    assert [(f["seed"], f["reason"], f["retryable"]) for f in failed] == [
        ("Question number 6?", "http_400", False)]
    with BatchTestServer(replies) as srv:  # resuming does not resubmit it
        stats, _ = batch_run(srv, tmp_path / "c", seeds_file, mode="v2", max_turns=1)
        assert srv.submitted == [] and stats.previously_done == 9


def test_sharding_validation_failure_and_retry_limit(tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 10)
    with BatchTestServer(replies, max_requests=4, polls_per_state=2) as srv:
        srv.plan(JobPlan(), JobPlan(fail="injected: invalid input file"))
        opts = BatchOptions(poll_interval=0.0, max_requests=4)
        stats, _ = batch_run(srv, tmp_path / "b", seeds_file, options=opts)
        sizes = [len(b.lines) for b in srv.batches.values()]
        assert sizes == [4, 4, 2, 4] and stats.done == 10  # the failed shard was resubmitted
        assert all(len(b.lines) <= 4 for b in srv.batches.values())
    info = summarize(tmp_path / "b")["batch"]
    assert [j["status"] for j in info["jobs"]] == ["completed", "failed", "completed", "completed"]
    assert "injected: invalid input file" in info["jobs"][1]["errors"][0]

    # every attempt of a row fails: the dialogue fails (retryable) after --batch-attempts
    always = Error(503, "down")
    with BatchTestServer(lambda b: always if "number 0?" in json.dumps(b) else replies(b)) as srv:
        stats, _ = batch_run(srv, tmp_path / "c", make_seeds(tmp_path, 2),
                             options=BatchOptions(poll_interval=0.0, max_attempts=2))
        assert stats.done == 1 and stats.failed == 1 and len(srv.batches) == 2
        assert stats.reasons == {"retries_exhausted": 1}


# ------------------------------------------------------------------------------ the CLI
def cli(*args: str, env: dict, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "baize_tui.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, OPENAI_API_KEY=SECRET, BAIZE_HOME=str(tmp_path / "home"), **extra)
    env.pop("OPENAI_BASE_URL", None)
    return env


def run_args(srv: BatchTestServer, seeds_file: Path, out: Path, *more: str) -> list[str]:
    return ["selfchat", "run", "--batch", "--seeds", str(seeds_file), "--out", str(out),
            "--model", "gpt-4o-mini", "--base-url", srv.base_url, "--poll", "0.01", *more]


def test_cli_detach_status_cancel_resume_no_key_leak(tmp_path: Path) -> None:
    seeds_file = make_seeds(tmp_path, 6)
    out = tmp_path / "run"
    env = cli_env(tmp_path)
    with BatchTestServer(replies, polls_per_state=50) as srv:
        p = cli(*run_args(srv, seeds_file, out, "--detach"), env=env)
        assert p.returncode == 0, p.stderr
        assert "at the batch price (50% off)" in p.stderr and "re-run the same command" in p.stderr
        # gpt-4o-mini is $0.15/$0.60 per 1M: the projection states the batch price and the discount
        assert re.search(r"projected: 6 dialogue\(s\), up to 6 requests, ~[\d,]+ tokens, about "
                         r"\$[\d.]+ at the batch price \(\$0.075/\$0.3 per 1M in/out: 50% off "
                         r"\$0.15/\$0.6\)", p.stderr), p.stderr
        st = cli("selfchat", "status", str(out), env=env)
        assert "s001-01 validating" in st.stdout and "next:" in st.stdout
        live = cli(*[a for a in run_args(srv, seeds_file, out) if a not in ("--batch", "--poll", "0.01")],
                   env=env)
        assert live.returncode == 2 and "open batch jobs" in live.stderr  # would pay twice
        c = cli("selfchat", "cancel", str(out), env=env)
        assert c.returncode == 0 and "cancelling" in c.stdout, c.stderr
        srv.polls_per_state = 1
        p2 = cli(*run_args(srv, seeds_file, out), env=env)
        assert p2.returncode == 0, p2.stderr
        assert "6/6 done" in p2.stdout
        assert [b.obj["status"] for b in srv.batches.values()] == ["cancelled", "completed"]
        info = json.loads(cli("selfchat", "status", str(out), "--json", env=env).stdout)
        assert info["done"] == 6 and info["batch"]["submitted_requests"] == 12
        assert info["cost"] is not None and info["cost"] > 0
    texts = [p.stdout, p.stderr, p2.stdout, p2.stderr, st.stdout, c.stdout]
    texts += [f.read_text(encoding="utf-8") for f in out.rglob("*") if f.is_file() and f.name != ".lock"]
    assert len(texts) > 12 and not any(SECRET in t for t in texts)


def test_cli_no_batch_api_is_one_clear_error(tmp_path: Path) -> None:
    with OpenAITestServer(replies) as srv:  # a chat-only server (like vLLM's): no /v1/files
        p = cli("selfchat", "run", "--batch", "--seeds", str(make_seeds(tmp_path, 2)), "--out",
                str(tmp_path / "o"), "--model", "m", "--base-url", srv.base_url,
                env=cli_env(tmp_path))
    assert p.returncode == 1 and "no Batch API" in p.stderr and "Traceback" not in p.stderr


STAGES = ["prepared", "uploaded", "created", "downloaded", "collect_mid", "collected"]


@pytest.mark.parametrize("stage", ["created", "collect_mid"])
def test_v1_sigkill_in_the_retry_step_then_resume(tmp_path: Path, stage: str) -> None:
    """v1: the first job expires half done; the kill hits the step that resubmits the rest."""
    seeds_file = make_seeds(tmp_path, 8)
    live = live_export(tmp_path, seeds_file)
    out = tmp_path / "run"
    with BatchTestServer(replies) as srv:
        srv.plan(JobPlan(expire_after=5))
        args = run_args(srv, seeds_file, out)
        p = cli(*args, env=cli_env(tmp_path, BAIZE_TUI_BATCH_FAILPOINT=f"{stage}:2"))
        assert p.returncode == -signal.SIGKILL, p.stderr
        p2 = cli(*args, env=cli_env(tmp_path))
        assert p2.returncode == 0, p2.stderr
        assert len(srv.batches) == 2 and len(srv.submitted) == 8 + 3
    assert sorted(raw_ids(out)) == sorted({seed_id(f"Question number {i}?") for i in range(8)})
    assert exports(out, tmp_path / "export") == live


def test_sigint_stops_polling_not_the_jobs(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with BatchTestServer(replies, polls_per_state=10_000) as srv:
        proc = subprocess.Popen([sys.executable, "-m", "baize_tui.cli",
                                 *run_args(srv, make_seeds(tmp_path, 3), out)],
                                env=cli_env(tmp_path), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(m == "GET" for m, _ in srv.requests):
            time.sleep(0.01)  # wait for the first poll
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 130, stderr
        assert "keep running at the provider" in stderr
        assert [b.obj["status"] for b in srv.batches.values()] == ["validating"]


def test_batch_continues_a_live_run_and_shards_by_bytes(tmp_path: Path) -> None:
    from baize_tui.selfchat.batch_plan import shard_lines

    seeds_file = make_seeds(tmp_path, 10)
    with OpenAITestServer(replies) as live_srv:  # a live run did 4 of the seeds
        cfg = RunConfig(model="test-model", base_url=live_srv.base_url, concurrency=1)
        seeds = load_seeds(str(seeds_file), limit=4)
        run_selfchat(cfg, seeds, open_run(tmp_path / "b", cfg, seeds), api_key=SECRET)
    with BatchTestServer(replies) as srv:
        stats, _ = batch_run(srv, tmp_path / "b", seeds_file,
                             options=BatchOptions(poll_interval=0.0, max_bytes=3000))
        assert stats.previously_done == 4 and stats.done == 6
        assert all(srv.files[b.obj["input_file_id"]].obj["bytes"] <= 3000 for b in srv.batches.values())
        assert len(srv.batches) >= 2 and len(srv.submitted) == 6  # split by size, one step
    assert len(set(raw_ids(tmp_path / "b"))) == 10
    lines = [b"x" * 10, b"y" * 5000, b"z" * 10, b"w" * 10]
    assert [len(s) for s in shard_lines(lines, max_requests=2, max_bytes=100)] == [1, 1, 2]


@pytest.mark.parametrize("stage", STAGES)
def test_sigkill_between_stages_then_resume(tmp_path: Path, stage: str) -> None:
    """SIGKILL at a stage (in step 2 of 4), resume: no request twice, every seed once,
    the export byte-equal to the live run's."""
    seeds_file = make_seeds(tmp_path, 8)
    live = live_export(tmp_path, seeds_file, mode="v2", max_turns=2)
    out = tmp_path / "run"
    with BatchTestServer(replies) as srv:
        args = run_args(srv, seeds_file, out, "--mode", "v2", "--max-turns", "2")
        env = cli_env(tmp_path, BAIZE_TUI_BATCH_FAILPOINT=f"{stage}:2")
        p = cli(*args, env=env)
        assert p.returncode == -signal.SIGKILL, p.stderr
        p2 = cli(*args, env=cli_env(tmp_path))
        assert p2.returncode == 0, p2.stderr
        assert len(srv.submitted) == len(set(srv.submitted)), "a request was submitted twice"
        assert len(srv.batches) == 4 and len(srv.submitted) == 8 + 8 + 8 + 7
        uploads = [f for f in srv.files.values() if f.obj["purpose"] == "batch"]
        assert len(uploads) == 4  # an upload whose id was lost to the kill is found, not redone
        if stage == "created":
            assert "not submitting it again" in p2.stderr
    ids = raw_ids(out)
    assert len(ids) == len(set(ids)) == 8
    assert set(ids) == {seed_id(f"Question number {i}?") for i in range(8)}
    assert exports(out, tmp_path / "export") == live


def test_control_plane_errors_never_submit_twice(tmp_path: Path) -> None:
    """A batch created but answered with a 500 (a lost response) is found again, not resubmitted;
    transient errors on uploads and polls are retried."""
    seeds_file = make_seeds(tmp_path, 4)
    with BatchTestServer(replies) as srv:
        lost = {"batch": 1, "retrieve": 1}

        def hook(event: str, obj: dict) -> object:
            if lost.get(event):
                lost[event] -= 1
                return Error(500, "lost response (injected)")
            return None

        srv.hook = hook
        srv.control_errors.extend([Error(503, "busy"), Error(502, "bad gateway")])
        events: list = []
        stats, _ = batch_run(srv, tmp_path / "b", seeds_file, events=events)
        assert stats.done == 4 and len(srv.batches) == 1
        assert len(srv.submitted) == len(set(srv.submitted)) == 4
        assert any("not submitting it again" in e.message for e in events)
        assert ("POST", "/v1/batches") in srv.requests and srv.requests.count(("POST", "/v1/batches")) == 1


def test_cost_budget_caps_what_is_submitted(tmp_path: Path) -> None:
    with BatchTestServer(replies) as srv:
        events: list = []
        stats, _ = batch_run(srv, tmp_path / "b", make_seeds(tmp_path, 10), events=events,
                             price=(10.0, 10.0), max_cost=0.01, max_tokens=50)
        assert stats.stop_reason.startswith("budget reached"), stats.stop_reason
        assert 4 <= stats.done < 10 and stats.cost is not None and stats.cost <= 0.01
        first = len(srv.batches[next(iter(srv.batches))].lines)
        assert 1 <= first < 10  # the estimate (prompt + max_tokens) lets only some start
        assert len(srv.submitted) == len(set(srv.submitted)) == stats.done
        assert any(f"budget: submitting {first} of 10" in e.message for e in events)


def test_projection_counts_the_remaining_calls() -> None:
    from baize_tui.selfchat.batch_plan import Dialogue, project_remaining
    from baize_tui.selfchat.seeds import Seed

    cfg = RunConfig(model="m", mode="v2", max_turns=3, max_tokens=100)
    fresh = Dialogue(Seed("a", "Why is the sky blue?"))
    halfway = Dialogue(Seed("b", "How do plants grow?"), turns=[("Q?", "A.")], human="Next?")
    requests, tok_in, tok_out = project_remaining(cfg, [fresh, halfway])
    assert requests == 6 + 3  # fresh: 3 human + 3 AI; halfway: AI of turn 1, then turn 2
    assert tok_out == 100 * requests and tok_in > 0
    v1 = RunConfig(model="m", mode="v1")
    assert project_remaining(v1, [fresh, halfway])[0] == 2


def test_failed_and_rejected_dialogues_come_back_on_a_rerun(tmp_path: Path) -> None:
    """As in live runs: retryable failures are retried by the next run, rejected ones only with
    --retry-rejected; each attempt is one failed.jsonl line, a success one raw.jsonl line."""
    seeds_file = make_seeds(tmp_path, 3)
    out = tmp_path / "b"
    bad = {"number 0?": Error(503, "down"), "number 1?": "no tags at all"}

    def script(body: dict) -> object:
        text = json.dumps(body)
        return next((v for k, v in bad.items() if k in text), None) or replies(body)

    with BatchTestServer(script) as srv:
        stats, _ = batch_run(srv, out, seeds_file, options=BatchOptions(poll_interval=0.0, max_attempts=1))
        assert (stats.done, stats.failed, stats.rejected) == (1, 1, 1)
        bad.clear()
        stats, _ = batch_run(srv, out, seeds_file)  # the 503 is retried, the rejection is not
        assert (stats.done, stats.failed, stats.rejected, stats.previously_done) == (1, 0, 0, 1)
        stats, _ = batch_run(srv, out, seeds_file, retry_rejected=True)
        assert (stats.done, stats.previously_done) == (1, 2)
        assert len(srv.submitted) == 3 + 1 + 1
    assert len(set(raw_ids(out))) == len(raw_ids(out)) == 3
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert [(f["reason"], f["retryable"]) for f in failed] == [("retries_exhausted", True),
                                                               ("no_ai_turn", False)]
    assert summarize(out)["failed"] == summarize(out)["rejected"] == 0
