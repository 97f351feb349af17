"""The async self-chat runner itself (:class:`SelfChatRunner`): seeds in, dialogues appended
to the run directory as they finish.

The package docstring (:mod:`baize_tui.selfchat.runner`) describes its behaviour: concurrency,
RPM/TPM pacing, which failures are retried, failed or stop the run, and the budgets.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from baize_tui.redact import redact_text, register_secret
from baize_tui.selfchat import templates as tpl
from baize_tui.selfchat.runner.client import (
    CallResult,
    DialogueFailed,
    FatalRunError,
    RateLimiter,
    _now,
    _response_class,
    _Retry,
    _short,
    estimate_tokens,
    parse_duration,
    parse_retry_after,
)
from baize_tui.selfchat.runner.config import Event, RunConfig, RunStats, emit_event, redact_url
from baize_tui.selfchat.seeds import Seed
from baize_tui.selfchat.store import RunStore
from baize_tui.selfchat.transcript import ParseResult, evaluate_turns, evaluate_v1


# ---------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------
class SelfChatRunner:
    """Generates one dialogue per seed into a ``RunStore``; see the module docstring."""

    def __init__(self, config: RunConfig, seeds: list[Seed], store: RunStore, *, api_key: str,
                 on_event: Callable[[Event], None] | None = None, client: Any = None) -> None:
        self.config = config
        self.store = store
        self._api_key = api_key
        register_secret(api_key)  # scrubbed from everything the run writes and logs
        self._client = client
        self.on_event = on_event
        self.stats = RunStats()
        self.limiter = RateLimiter(config.rpm, config.tpm)
        self._stopping = False
        self._resume = asyncio.Event()
        self._resume.set()
        self._pause_until = 0.0
        self._reported: set[str] = set()
        self._reserved_tokens = 0
        self._fatal: str | None = None
        self._avg_dialogue_tokens: float | None = None
        self._endpoint = redact_url(config.base_url)
        self._host = urlsplit(config.base_url).hostname or ""
        self._plan(seeds)

    # -- planning ------------------------------------------------------------------------
    def _plan(self, seeds: list[Seed]) -> None:
        done = self.store.done_ids()
        failures = self.store.latest_failures()
        todo: list[Seed] = []
        previously = 0
        for seed in seeds:
            if seed.id in done:
                previously += 1
                continue
            prior = failures.get(seed.id)
            if prior is not None and not prior.get("retryable", True) and not self.config.retry_rejected:
                self.stats.reasons[prior.get("reason", "failed")] += 1
                if prior.get("kind") == "rejected":
                    self.stats.rejected += 1
                else:
                    self.stats.failed += 1
                continue
            todo.append(seed)
        self.todo = todo
        self.stats.total = len(seeds)
        self.stats.previously_done = previously
        # spend of earlier sessions counts against the budget
        for rec in list(self.store.raw_records) + list(self.store.failed_records):
            usage = rec.get("usage") or {}
            self.stats.tokens_in += int(usage.get("prompt_tokens", 0) or 0)
            self.stats.tokens_out += int(usage.get("completion_tokens", 0) or 0)
        self.stats.cost = self._cost(self.stats.tokens_in, self.stats.tokens_out)

    # -- control -------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Start no new dialogue; in-flight ones finish and are saved."""
        if not self._stopping:
            self._stopping = True
            self.stats.stop_reason = self.stats.stop_reason or reason
            self._resume.set()
            self._emit("stop", reason)

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called or a budget or fatal error ended the run."""
        return self._stopping

    def pause(self) -> None:
        """Hold new requests until ``resume()`` (in-flight requests finish)."""
        self._resume.clear()
        self._emit("pause", "paused by the user")

    def resume(self) -> None:
        """Undo ``pause()``."""
        self._resume.set()

    @property
    def paused(self) -> bool:
        """Whether ``pause()`` is in effect."""
        return not self._resume.is_set()

    # -- helpers -------------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        """``text`` with the API key (registered in ``__init__``) and URL credentials masked
        (servers sometimes echo what they were sent)."""
        return redact_text(text)

    def _emit(self, kind: str, message: str = "", record: dict[str, Any] | None = None) -> None:
        emit_event(self.store, self.on_event, kind, message, record,
                   logged=("retry", "pause", "error", "notice", "stop"))

    def _report_once(self, key: str, kind: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            self._emit(kind, message)

    def _cost(self, tokens_in: int, tokens_out: int) -> float | None:
        if self.config.price is None:
            return None
        p_in, p_out = self.config.price
        return (tokens_in * p_in + tokens_out * p_out) / 1_000_000

    def _estimate_dialogue(self, seed: Seed) -> int:
        if self._avg_dialogue_tokens is not None:
            return int(self._avg_dialogue_tokens)
        prompt = estimate_tokens(self.config.template.render(seed.text))
        out = self.config.max_tokens or 512
        calls = 1 if self.config.mode == "v1" else 2 * self.config.max_turns
        return (prompt + out) * calls

    def _budget_check(self, reserve: int = 0) -> str | None:
        """``None`` to go on, ``"wait"`` while in-flight work may still fit, else why to stop.

        A new dialogue starts only if the spend so far, the in-flight reservations and its own
        estimate fit; with nothing in flight and no estimate yet (the first dialogue) it starts
        as long as the budget is not used up.
        """
        cfg = self.config
        known = self._avg_dialogue_tokens is not None
        if cfg.max_tokens_total is not None:
            used = self.stats.tokens
            if used >= cfg.max_tokens_total:
                return f"token budget reached ({used:,} used of {cfg.max_tokens_total:,})"
            if used + self._reserved_tokens + reserve > cfg.max_tokens_total:
                if self._reserved_tokens:
                    return "wait"
                if known:
                    return (f"token budget reached ({used:,} used of {cfg.max_tokens_total:,}; "
                            f"the next dialogue needs about {reserve:,})")
        if cfg.max_cost is not None and cfg.price is not None:
            spent = self.stats.cost or 0.0
            per_token = max(cfg.price) / 1e6
            if spent >= cfg.max_cost:
                return f"cost budget reached (${spent:.4f} spent of ${cfg.max_cost:.2f})"
            if spent + (self._reserved_tokens + reserve) * per_token > cfg.max_cost:
                if self._reserved_tokens:
                    return "wait"
                if known:
                    return (f"cost budget reached (${spent:.4f} spent of ${cfg.max_cost:.2f}; "
                            f"the next dialogue costs about ${reserve * per_token:.4f})")
        return None

    async def _wait_ready(self) -> None:
        while True:
            await self._resume.wait()
            delay = self._pause_until - time.monotonic()
            if delay <= 0:
                return
            self.stats.paused_until = self._pause_until
            await asyncio.sleep(delay)

    def _pause_all(self, seconds: float, why: str) -> None:
        until = time.monotonic() + seconds
        if until > self._pause_until + 0.05:
            self._pause_until = until
            self.stats.paused_until = until
            self._emit("pause", f"all workers pause {seconds:.1f}s: {why}")

    def _backoff(self, attempt: int) -> float:
        cap = min(self.config.backoff_cap, self.config.backoff_base * (2 ** attempt))
        return cap / 2 + random.uniform(0, cap / 2)

    def _observe_headers(self, headers: Any) -> None:
        for kind in ("requests", "tokens"):
            remaining = headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is not None and remaining.strip() == "0":
                reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
                if reset:
                    self._pause_all(min(reset, self.config.backoff_cap),
                                    f"the server reports 0 {kind} left")

    # -- one API call, with retries ------------------------------------------------------
    async def _call(self, messages: list[dict[str, str]], *, stop: list[str] | None = None) -> CallResult:
        import openai

        params: dict[str, Any] = {"model": self.config.model, "messages": messages}
        if self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        if self.config.max_tokens is not None:
            params["max_tokens"] = self.config.max_tokens
        if stop:
            params["stop"] = stop
        estimate = sum(estimate_tokens(m["content"]) for m in messages) + (self.config.max_tokens or 256)
        attempt = 0
        while True:
            await self._wait_ready()
            await self.limiter.acquire(estimate)
            try:
                return await self._send(params, estimate)
            except _Retry as retry:
                error = str(retry)
                wait = retry.wait
                global_pause = retry.global_pause
                if global_pause:
                    self.stats.rate_limited += 1
                    wait = wait if wait is not None else self._backoff(attempt)
                    wait += random.uniform(0, 0.05 + 0.05 * wait)
                    self._pause_all(wait, error)
                else:
                    wait = self._backoff(attempt) if wait is None else wait
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise FatalRunError(
                    f"{self._endpoint} refused the API key ({exc.status_code}): set OPENAI_API_KEY "
                    "or [openai] api_key in the config to a valid key") from None
            except openai.NotFoundError as exc:
                raise FatalRunError(
                    f"{self._endpoint} answered 404 for model {self.config.model!r}: check --model "
                    f"and --base-url ({_short(exc)})") from None
            except openai.APIStatusError as exc:  # 400, 422 and other client errors
                raise DialogueFailed(f"http_{exc.status_code}", _short(exc), retryable=False) from None
            attempt += 1
            self.stats.retries += 1
            error = self._redact(error)
            self.stats.last_error = error
            if attempt > self.config.max_retries:
                raise DialogueFailed("retries_exhausted",
                                     f"gave up after {attempt} attempts: {error}", retryable=True)
            self._emit("retry", f"attempt {attempt + 1} in {wait:.1f}s after: {error}")
            if not global_pause:
                await asyncio.sleep(wait)

    async def _send(self, params: dict[str, Any], estimate: int) -> CallResult:
        import openai

        client = self._client
        try:
            # client.post with the HTTP response class (the SDK's documented route for raw
            # requests) skips the per-call TypedDict transform and pydantic models, which are
            # most of the client's CPU per request; status errors, timeouts and connection
            # errors are raised exactly as from chat.completions.create.
            raw = await client.post("/chat/completions", cast_to=_response_class(), body=params)
        except openai.RateLimitError as exc:
            code = exc.code or ((exc.body or {}).get("code") if isinstance(exc.body, dict) else None)
            if code == "insufficient_quota":
                raise FatalRunError(f"{self._endpoint}: out of quota (insufficient_quota); add "
                                    "credit or use another key/--base-url") from None
            raise _Retry(f"429 rate limited: {_short(exc)}",
                         parse_retry_after(exc.response.headers), global_pause=True) from None
        except openai.APITimeoutError:
            raise _Retry(f"timed out after {self.config.timeout:g}s") from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            raise _Retry(f"connection error: {type(cause).__name__}: {cause}"[:300]) from None
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409):
                raise _Retry(f"HTTP {exc.status_code}: {_short(exc)}",
                             parse_retry_after(exc.response.headers)) from None
            raise
        except openai.APIResponseValidationError as exc:
            raise _Retry(f"malformed response: {exc}"[:300]) from None
        self.stats.calls += 1
        self._observe_headers(raw.headers)
        try:
            body = json.loads(raw.content)
            choice = body["choices"][0]
            text = choice["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not text")
            finish = choice.get("finish_reason")
            usage = body.get("usage") or {}
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise _Retry(f"malformed response body: {type(exc).__name__}: {exc}"[:300]) from None
        p_tok = int(usage.get("prompt_tokens") or 0)
        c_tok = int(usage.get("completion_tokens") or 0)
        self.limiter.settle(estimate, p_tok + c_tok)
        self.stats.tokens_in += p_tok
        self.stats.tokens_out += c_tok
        self.stats.cost = self._cost(self.stats.tokens_in, self.stats.tokens_out)
        return CallResult(text, finish, p_tok, c_tok)

    # -- one dialogue --------------------------------------------------------------------
    async def _dialogue(self, seed: Seed) -> None:
        cfg = self.config
        t0 = time.monotonic()
        retries0 = self.stats.retries
        calls: list[CallResult] = []
        by_role: dict[str, list[int]] = {}
        termination = "completed"

        async def call(role: str, messages: list[dict[str, str]], stop: list[str] | None = None) -> CallResult:
            res = await self._call(messages, stop=stop)
            calls.append(res)
            acc = by_role.setdefault(role, [0, 0])
            acc[0] += res.prompt_tokens
            acc[1] += res.completion_tokens
            return res

        def usage() -> dict[str, Any]:
            out: dict[str, Any] = {
                "prompt_tokens": sum(c.prompt_tokens for c in calls),
                "completion_tokens": sum(c.completion_tokens for c in calls),
                "calls": len(calls),
            }
            if cfg.mode == "v2":
                out["by_role"] = {k: {"prompt_tokens": v[0], "completion_tokens": v[1]}
                                  for k, v in by_role.items()}
            return out

        base = {"id": seed.id, "seed": seed.text, "mode": cfg.mode, "model": cfg.model,
                "endpoint": self._host}
        try:
            if cfg.mode == "v1":
                res = await call("transcript", [{"role": "user", "content": cfg.template.render(seed.text)}])
                transcript = res.text
                parsed: ParseResult = evaluate_v1(transcript, min_turns=cfg.min_turns)
            else:
                turns: list[tuple[str, str]] = []
                termination = "max_turns"
                for _ in range(cfg.max_turns):
                    prompt = tpl.v2_human_prompt(cfg.template, seed.text, turns)
                    human = (await call("human", [{"role": "user", "content": prompt}],
                                        stop=tpl.V2_HUMAN_STOP)).text.strip()
                    if not human:
                        termination = "human_done"
                        break
                    ai = (await call("ai", tpl.v2_ai_messages(turns, human))).text.strip()
                    turns.append((human, ai))
                transcript = tpl.v2_transcript(turns)
                parsed = evaluate_turns(turns, min_turns=cfg.min_turns)
        except DialogueFailed as exc:
            error = self._redact(str(exc))
            rec: dict[str, Any] = dict(base, kind="failed", reason=exc.reason, retryable=exc.retryable,
                       error=error, usage=usage(), retries=self.stats.retries - retries0,
                       time=_now())
            self.store.append_failed(rec)
            self.stats.failed += 1
            self.stats.reasons[exc.reason] += 1
            self.stats.last_error = error
            self._report_once(f"fail:{exc.reason}", "error", f"{seed.text[:60]!r}: {error}")
            self._emit("failed", error, rec)
            return
        rec = dict(base, transcript=transcript, turns=[list(t) for t in parsed.turns],
                   usage=usage(), finish_reasons=[c.finish_reason for c in calls],
                   termination=termination,
                   params={"temperature": cfg.temperature, "max_tokens": cfg.max_tokens,
                           "max_turns": cfg.max_turns if cfg.mode == "v2" else None},
                   elapsed_s=round(time.monotonic() - t0, 3),
                   retries=self.stats.retries - retries0, time=_now())
        total = rec["usage"]["prompt_tokens"] + rec["usage"]["completion_tokens"]
        if total:
            prev = self._avg_dialogue_tokens
            self._avg_dialogue_tokens = total if prev is None else 0.9 * prev + 0.1 * total
        if parsed.ok:
            self.store.append_done(rec)
            self.stats.done += 1
            self.stats._finish_times.append(time.monotonic())
            self._emit("done", seed.text, rec)
        else:
            rec.update(kind="rejected", reason=parsed.reason, retryable=False, error=parsed.detail)
            self.store.append_failed(rec)
            self.stats.rejected += 1
            self.stats.reasons[parsed.reason or "rejected"] += 1
            self._emit("failed", f"rejected ({parsed.reason}): {parsed.detail}", rec)

    # -- workers -------------------------------------------------------------------------
    async def _worker(self, queue: deque[Seed]) -> None:
        while queue and not self._stopping:
            await self._resume.wait()
            if self._stopping or not queue:
                return
            seed = queue[0]
            reserve = self._estimate_dialogue(seed)
            verdict = self._budget_check(reserve)
            if verdict == "wait":  # in-flight dialogues may use up the budget: let them land
                await asyncio.sleep(0.05)
                continue
            if verdict:
                self.stop(verdict)
                return
            queue.popleft()
            self.stats.in_flight += 1
            self._reserved_tokens += reserve
            try:
                await self._dialogue(seed)
            except FatalRunError as exc:
                if self._fatal is None:
                    self._fatal = self._redact(str(exc))
                    self.stats.last_error = self._fatal
                    self._emit("error", self._fatal)
                self.stop("fatal")
                return
            finally:
                self.stats.in_flight -= 1
                self._reserved_tokens -= reserve
            verdict = self._budget_check()
            if verdict and verdict != "wait":
                self.stop(verdict)

    async def run(self) -> RunStats:
        """Generate every planned dialogue (or until stopped); returns the final stats.

        Raises ``FatalRunError`` after the workers wound down when the run hit one.
        """
        cfg = self.config
        if cfg.max_cost is not None and cfg.price is None:
            self._report_once("price", "notice", f"no price known for model {cfg.model!r}: "
                              "--max-cost does not apply (add it under [selfchat.prices] in the config)")
        owns_client = self._client is None
        if owns_client:
            import openai

            self._client = openai.AsyncOpenAI(
                api_key=self._api_key, base_url=cfg.base_url, max_retries=0,
                timeout=openai.Timeout(cfg.timeout, connect=min(10.0, cfg.timeout)))
        queue: deque[Seed] = deque(self.todo)
        self.stats.started = time.monotonic()
        try:
            workers = [asyncio.ensure_future(self._worker(queue))
                       for _ in range(max(1, min(cfg.concurrency, len(queue) or 1)))]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for w in workers:
                    w.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                self.stats.stop_reason = self.stats.stop_reason or "cancelled"
                raise
        finally:
            self.stats.finished = time.monotonic()
            if owns_client:
                await self._client.close()
                self._client = None
        if not self.stats.stop_reason:
            self.stats.stop_reason = "finished"
        if self._fatal:
            raise FatalRunError(self._fatal)
        return self.stats
