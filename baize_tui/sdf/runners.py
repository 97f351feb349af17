"""Async SDF runners on top of the self-chat runner: its rate-limited ``AsyncOpenAI`` client,
retries with backoff, global pause on 429, fail-fast on bad keys, budgets and key redaction
are reused as they are; only the unit of work differs.

- :class:`JudgeRunner`: one judged prompt per unit (scores for its N shuffled candidates).
- :class:`CandidateRunner`: one prompt's N candidates from an OpenAI-compatible server (e.g. a
  llama.cpp server running the SFT model with parallel slots).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from baize_tui.prompt import STOP_STRINGS, cut_reply
from baize_tui.sdf import judge as jd
from baize_tui.sdf.store import CandidateStore, JudgeStore
from baize_tui.selfchat.runner import (
    CallResult,
    DialogueFailed,
    Event,
    RunConfig,
    SelfChatRunner,
    estimate_tokens,
)
from baize_tui.selfchat.seeds import Seed


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _usage(calls: list[CallResult]) -> dict[str, int]:
    return {"prompt_tokens": sum(c.prompt_tokens for c in calls),
            "completion_tokens": sum(c.completion_tokens for c in calls), "calls": len(calls)}


@dataclass
class JudgeSettings:
    """How prompts are judged beyond the API settings in :class:`RunConfig`."""

    seed: int = 0
    parse_retries: int = 2


class _UnitRunner(SelfChatRunner):
    """Shared bookkeeping of a finished or failed unit of work."""

    def _record_done(self, rec: dict[str, Any], label: str) -> None:
        total = rec["usage"]["prompt_tokens"] + rec["usage"]["completion_tokens"]
        if total:
            prev = self._avg_dialogue_tokens
            self._avg_dialogue_tokens = total if prev is None else 0.9 * prev + 0.1 * total
        self.store.append_done(rec)
        self.stats.done += 1
        self.stats._finish_times.append(time.monotonic())
        self._emit("done", label, rec)

    def _record_failed(self, rec: dict[str, Any], label: str) -> None:
        rec["error"] = self._redact(str(rec.get("error", "")))
        self.store.append_failed(rec)
        self.stats.failed += 1
        self.stats.reasons[rec["reason"]] += 1
        self.stats.last_error = rec["error"]
        self._report_once(f"fail:{rec['reason']}", "error", f"{label[:60]!r}: {rec['error']}")
        self._emit("failed", rec["error"], rec)


class JudgeRunner(_UnitRunner):
    """Scores every sampled prompt's candidates with a chat model; see the module docstring."""

    def __init__(self, config: RunConfig, items: list[dict[str, Any]], store: JudgeStore, *,
                 api_key: str, settings: JudgeSettings | None = None,
                 on_event: Callable[[Event], None] | None = None, client: Any = None) -> None:
        self.items = {rec["id"]: rec for rec in items}
        self.settings = settings or JudgeSettings()
        self.histogram: Counter[int] = Counter()
        seeds = [Seed(rec["id"], rec["prompt"]) for rec in items]
        super().__init__(config, seeds, store, api_key=api_key, on_event=on_event, client=client)

    def _estimate_dialogue(self, seed: Seed) -> int:
        if self._avg_dialogue_tokens is not None:
            return int(self._avg_dialogue_tokens)
        rec = self.items[seed.id]
        text = jd.render_judge_prompt(rec["prompt"], [c["text"] for c in rec["candidates"]])
        return estimate_tokens(text) + (self.config.max_tokens or 16 * len(rec["candidates"]) + 16)

    async def _dialogue(self, seed: Seed) -> None:
        rec = self.items[seed.id]
        texts = [c["text"] for c in rec["candidates"]]
        n = len(texts)
        sseed = jd.shuffle_seed(self.settings.seed, seed.id)
        order = jd.shuffle_order(n, sseed)
        messages = jd.judge_messages(seed.text, [texts[i] for i in order])
        calls: list[CallResult] = []
        t0 = time.monotonic()
        base = {"id": seed.id, "prompt": seed.text, "judge": self.config.model,
                "endpoint": self._host, "shuffle_seed": sseed, "order": order}
        problems: list[str] = []
        while True:
            try:
                res = await self._call(messages)
            except DialogueFailed as exc:
                self._record_failed(dict(base, kind="failed", reason=exc.reason,
                                         retryable=exc.retryable, error=str(exc),
                                         usage=_usage(calls), time=_now()), seed.text)
                return
            calls.append(res)
            try:
                shown = jd.parse_scores(res.text, n)
                break
            except jd.ParseError as exc:
                problems.append(str(exc))
                if len(problems) > self.settings.parse_retries:
                    self._record_failed(dict(
                        base, kind="failed", reason=f"parse_{exc.reason}", retryable=True,
                        error=f"{len(problems)} unreadable replies; last: {exc}",
                        reply=self._redact(res.text), problems=problems, usage=_usage(calls),
                        time=_now()), seed.text)
                    return
                self.stats.retries += 1
                self._emit("retry", f"judge reply unreadable ({exc}); asking again")
                messages = messages + [{"role": "assistant", "content": res.text},
                                       {"role": "user", "content": jd.correction_message(str(exc), n)}]
        scores = jd.unshuffle(shown, order)
        verdict = jd.pick_best(scores)
        self.histogram.update(scores)
        done = dict(base, scores=scores, best=verdict.best, best_score=verdict.score,
                    tied=list(verdict.tied), reply=self._redact(res.text), attempts=len(calls),
                    problems=problems, usage=_usage(calls),
                    elapsed_s=round(time.monotonic() - t0, 3), time=_now())
        self._record_done(done, seed.text)


class CandidateRunner(_UnitRunner):
    """N candidates per prompt from an OpenAI-compatible chat server (Baize chat template)."""

    def __init__(self, config: RunConfig, prompts: list[Seed], store: CandidateStore, *, n: int,
                 api_key: str, empty_retries: int = 2, spec: str = "",
                 on_event: Callable[[Event], None] | None = None, client: Any = None) -> None:
        self.n = n
        self.empty_retries = empty_retries
        self.spec = spec or f"openai:{config.model}"
        super().__init__(config, prompts, store, api_key=api_key, on_event=on_event, client=client)

    def _estimate_dialogue(self, seed: Seed) -> int:
        if self._avg_dialogue_tokens is not None:
            return int(self._avg_dialogue_tokens)
        return (estimate_tokens(seed.text) + 200 + (self.config.max_tokens or 512)) * self.n

    async def _dialogue(self, seed: Seed) -> None:
        from baize_tui.sdf.sample import candidate_record, failure_record

        calls: list[CallResult] = []
        cands: list[dict[str, Any]] = []
        messages = [{"role": "user", "content": seed.text}]
        t0 = time.monotonic()
        try:
            for _k in range(self.n):
                for attempt in range(self.empty_retries + 1):
                    res = await self._call(messages, stop=list(STOP_STRINGS))
                    calls.append(res)
                    text = cut_reply(res.text)
                    if text:
                        break
                    if attempt == self.empty_retries:
                        raise DialogueFailed("empty_candidate", f"{attempt + 1} empty replies "
                                             "in a row", retryable=True)
                cands.append({"text": text, "finish_reason": res.finish_reason,
                              "completion_tokens": res.completion_tokens})
        except DialogueFailed as exc:
            self._record_failed(failure_record(seed, self.spec, exc.reason, str(exc),
                                               retryable=exc.retryable, usage=_usage(calls)),
                                seed.text)
            return
        params = {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}
        rec = candidate_record(seed, cands, model=self.spec, params=params, usage=_usage(calls),
                               elapsed=time.monotonic() - t0)
        self._record_done(rec, seed.text)
