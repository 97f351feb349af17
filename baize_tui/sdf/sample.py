"""``sdf sample``: N candidate replies per prompt from the model being improved.

Models (the ``--model`` spec): a local GGUF through llama.cpp or ``hf:BASE+LORA`` through
transformers+peft (sampled one at a time in this process, Baize prompt format, stop strings
``[|Human|]``/``[|AI|]``), or ``openai:MODEL`` on an OpenAI-compatible server such as a
llama.cpp server running the SFT GGUF with parallel slots (``--concurrency`` requests in
flight through the self-chat runner's client; the server's chat template renders the prompt).

A local GGUF decodes a prompt's N candidates together in one batch (:mod:`.batched`, what a
llama.cpp server's parallel slots do; ``--no-batch`` samples them one after another through
the chat engine). Local candidates get reproducible sampling seeds derived from ``--seed``,
the prompt id, the candidate number and the attempt (batched and one-by-one sampling give
different, equally valid candidates for the same seeds: the arithmetic differs). An empty candidate is sampled again (``empty_retries``);
a prompt whose candidates cannot be produced goes to ``sample_failed.jsonl`` with the reason.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from baize_tui.errors import UserError
from baize_tui.prompt import STOP_STRINGS, cut_reply, render
from baize_tui.sdf.store import CandidateStore
from baize_tui.selfchat.run import next_state, refuse_other_settings, run_in_fresh_loop
from baize_tui.selfchat.runner import Event, RunStats, emit_event, redact_url
from baize_tui.selfchat.seeds import Seed

STATE_VERSION = 1


@dataclass
class SampleConfig:
    """What shapes a sampling run (no secrets)."""

    model: str
    n: int = 4
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int = 0
    concurrency: int = 1
    base_url: str | None = None
    empty_retries: int = 2
    max_retries: int = 8
    timeout: float = 300.0
    retry_failed: bool = False
    fsync: bool = False
    batched: bool = True  # a GGUF decodes the N candidates together (see .batched)

    @property
    def remote(self) -> bool:
        """Whether candidates come from an OpenAI-compatible server."""
        return self.model.startswith("openai:")

    def fingerprint(self) -> dict[str, Any]:
        """Settings that make candidates comparable (checked on resume)."""
        return {"model": self.model, "n": self.n, "temperature": self.temperature,
                "top_p": self.top_p if not self.remote else None,
                "max_tokens": self.max_tokens, "seed": self.seed}

    def public(self) -> dict[str, Any]:
        """The config as saved in ``sample_state.json``."""
        out = asdict(self)
        if self.base_url:
            out["base_url"] = redact_url(self.base_url)
        out["fingerprint"] = self.fingerprint()
        return out


def candidate_seed(run_seed: int, prompt_id: str, k: int, attempt: int = 0) -> int:
    """The sampling seed of candidate ``k`` of a prompt (stable across resumes)."""
    digest = hashlib.sha256(f"{run_seed}:{prompt_id}:{k}:{attempt}".encode()).hexdigest()
    return int(digest[:8], 16) % (2**31)


def candidate_record(seed: Seed, cands: list[dict[str, Any]], *, model: str,
                     params: dict[str, Any], usage: dict[str, Any], elapsed: float) -> dict[str, Any]:
    """One ``candidates.jsonl`` line."""
    return {"id": seed.id, "prompt": seed.text, "candidates": cands, "n": len(cands),
            "model": model, "params": params, "usage": usage, "elapsed_s": round(elapsed, 3),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def failure_record(seed: Seed, model: str, reason: str, error: str, *, retryable: bool,
                   usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``sample_failed.jsonl`` line."""
    return {"id": seed.id, "prompt": seed.text, "kind": "failed", "model": model,
            "reason": reason, "retryable": retryable, "error": error,
            "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0},
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def open_sample(out: Path | str, config: SampleConfig, prompts: list[Seed], *,
                prompts_info: dict[str, Any] | None = None, force: bool = False) -> CandidateStore:
    """Open (or create) the run directory for sampling and save ``sample_state.json``.

    A directory sampled with other settings is refused unless ``force``.
    """
    if config.n < 1:
        raise UserError("--n must be at least 1")
    store = CandidateStore(out, fsync=config.fsync)
    state = store.read_state()
    if state is not None and not force:
        refuse_other_settings(store, (state.get("config") or {}).get("fingerprint") or {},
                              config.fingerprint(), done="sampled",
                              advice="use a new --out, or --force to continue anyway")
    store.write_state(next_state(state, STATE_VERSION, {"prompts": len(prompts)},
                                 config=config.public(),
                                 prompts=dict(prompts_info or {}, count=len(prompts))))
    return store


def plan(prompts: list[Seed], store: CandidateStore, stats: RunStats, *,
         retry_failed: bool) -> list[Seed]:
    """Prompts still to sample; done ones and permanent failures are counted in ``stats``."""
    done = store.done_ids()
    failures = store.latest_failures()
    todo: list[Seed] = []
    stats.total = len(prompts)
    for seed in prompts:
        if seed.id in done:
            stats.previously_done += 1
            continue
        prior = failures.get(seed.id)
        if prior is not None and not prior.get("retryable", True) and not retry_failed:
            stats.failed += 1
            stats.reasons[prior.get("reason", "failed")] += 1
            continue
        todo.append(seed)
    return todo


class LocalSampler:
    """Samples candidates from a local engine (llama.cpp or transformers), one at a time.

    ``stop()``, ``pause()`` and ``resume()`` may be called from another thread; a stop takes
    effect between candidates (the prompt in progress is dropped and sampled again next run).
    """

    def __init__(self, engine: Any, config: SampleConfig, prompts: list[Seed],
                 store: CandidateStore, *, on_event: Callable[[Event], None] | None = None) -> None:
        self.engine = engine
        self.config = config
        self.store = store
        self.on_event = on_event
        self.stats = RunStats(cost=None)  # local: no price
        self.todo = plan(prompts, store, self.stats, retry_failed=config.retry_failed)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._cancel = threading.Event()

    def stop(self, reason: str = "stopped") -> None:
        """Stop after the candidate being sampled."""
        self.stats.stop_reason = self.stats.stop_reason or reason
        self._stop.set()
        self._cancel.set()
        self._running.set()

    def pause(self) -> None:
        """Hold before the next prompt."""
        self._running.clear()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._running.set()

    @property
    def paused(self) -> bool:
        """Whether :meth:`pause` is in effect."""
        return not self._running.is_set()

    def _emit(self, kind: str, message: str = "", record: dict[str, Any] | None = None) -> None:
        emit_event(self.store, self.on_event, kind, message, record,
                   logged=("error", "notice", "stop"), prefix="sample ")

    def run(self) -> RunStats:
        """Sample every planned prompt (or until stopped); returns the stats."""
        self.stats.started = time.monotonic()
        for seed in self.todo:
            self._running.wait()
            if self._stop.is_set():
                break
            self.stats.in_flight = 1
            try:
                self._one(seed)
            finally:
                self.stats.in_flight = 0
        self.stats.finished = time.monotonic()
        self.stats.stop_reason = self.stats.stop_reason or "finished"
        return self.stats

    def _sample(self, prompt: str, seed: Seed, k: int) -> dict[str, Any] | None:
        from baize_tui.engines.base import SamplingParams

        cfg = self.config
        for attempt in range(cfg.empty_retries + 1):
            sseed = candidate_seed(cfg.seed, seed.id, k, attempt)
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p,
                                    max_new_tokens=cfg.max_tokens, seed=sseed)
            gen = self.engine.stream(prompt, params, self._cancel, stop=STOP_STRINGS)
            with gen:
                text = cut_reply("".join(gen))
            self.stats.calls += 1
            self.stats.tokens_in += gen.stats.prompt_tokens
            self.stats.tokens_out += gen.stats.completion_tokens
            if gen.stats.finish_reason == "cancelled" or self._stop.is_set():
                return None
            if text:
                return {"text": text, "finish_reason": gen.stats.finish_reason,
                        "completion_tokens": gen.stats.completion_tokens, "seed": sseed}
            self.stats.retries += 1
        raise _Failed("empty_candidate", f"{cfg.empty_retries + 1} empty replies in a row for "
                      f"candidate {k + 1}", retryable=True)

    def _sample_batched(self, prompt: str, seed: Seed) -> list[dict[str, Any]] | None:
        """All N candidates decoded together; empty ones are drawn again with new seeds."""
        cfg = self.config
        cands: list[dict[str, Any] | None] = [None] * cfg.n
        for attempt in range(cfg.empty_retries + 1):
            todo = [k for k in range(cfg.n) if cands[k] is None]
            seeds = [candidate_seed(cfg.seed, seed.id, k, attempt) for k in todo]
            n_prompt, got = self.engine.sample_many(
                prompt, seeds, temperature=cfg.temperature, top_p=cfg.top_p,
                max_tokens=cfg.max_tokens, cancel=self._cancel)
            self.stats.calls += 1
            self.stats.tokens_in += n_prompt
            self.stats.tokens_out += sum(c.completion_tokens for c in got)
            if self._stop.is_set():
                return None
            for k, sseed, cand in zip(todo, seeds, got, strict=True):
                if cand.text:
                    cands[k] = {"text": cand.text, "finish_reason": cand.finish_reason,
                                "completion_tokens": cand.completion_tokens, "seed": sseed}
            if all(c is not None for c in cands):
                return [c for c in cands if c is not None]
            self.stats.retries += 1
        missing = [str(k + 1) for k in range(cfg.n) if cands[k] is None]
        raise _Failed("empty_candidate", f"{cfg.empty_retries + 1} empty replies in a row for "
                      f"candidate(s) {', '.join(missing)}", retryable=True)

    def _candidates(self, prompt: str, seed: Seed) -> list[dict[str, Any]] | None:
        if hasattr(self.engine, "sample_many"):
            return self._sample_batched(prompt, seed)
        cands: list[dict[str, Any]] = []
        for k in range(self.config.n):
            cand = self._sample(prompt, seed, k)
            if cand is None:
                return None
            cands.append(cand)
        return cands

    def _one(self, seed: Seed) -> None:
        cfg = self.config
        t0 = time.monotonic()
        prompt = render(None, [], seed.text)
        tokens0 = (self.stats.tokens_in, self.stats.tokens_out)
        try:
            got = self._candidates(prompt, seed)
            if got is None:
                return  # stopped: the prompt is sampled again next run
            cands = got
        except _Failed as exc:
            self._fail(seed, exc.reason, str(exc), exc.retryable)
            return
        except UserError as exc:  # context overflow and other input problems: permanent
            reason = "context_overflow" if "context" in str(exc).lower() else "input_error"
            self._fail(seed, reason, str(exc), False)
            return
        except Exception as exc:  # noqa: BLE001 - recorded with its reason, never dropped
            self._fail(seed, "generation_error", f"{type(exc).__name__}: {exc}", True)
            return
        usage = {"prompt_tokens": self.stats.tokens_in - tokens0[0],
                 "completion_tokens": self.stats.tokens_out - tokens0[1], "calls": cfg.n}
        params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
        rec = candidate_record(seed, cands, model=cfg.model, params=params, usage=usage,
                               elapsed=time.monotonic() - t0)
        self.store.append_done(rec)
        self.stats.done += 1
        self.stats._finish_times.append(time.monotonic())
        self._emit("done", seed.text, rec)

    def _fail(self, seed: Seed, reason: str, error: str, retryable: bool) -> None:
        rec = failure_record(seed, self.config.model, reason, error, retryable=retryable)
        self.store.append_failed(rec)
        self.stats.failed += 1
        self.stats.reasons[reason] += 1
        self.stats.last_error = error
        self._emit("failed", error, rec)


class _Failed(Exception):
    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


def remote_run_config(config: SampleConfig) -> Any:
    """The self-chat ``RunConfig`` that drives an ``openai:MODEL`` sampling run."""
    from baize_tui.selfchat.runner import RunConfig

    if not config.base_url:
        raise UserError(f"--model {config.model}: give --base-url (the server's /v1 URL)")
    return RunConfig(model=config.model.partition(":")[2], base_url=config.base_url,
                     concurrency=config.concurrency, temperature=config.temperature,
                     max_tokens=config.max_tokens, max_retries=config.max_retries,
                     timeout=config.timeout, fsync=config.fsync,
                     retry_rejected=config.retry_failed)


def run_sample(config: SampleConfig, prompts: list[Seed], store: CandidateStore, *,
               api_key: str = "", engine: Any = None,
               on_event: Callable[[Event], None] | None = None,
               on_start: Callable[[Any], None] | None = None) -> RunStats:
    """Sample to the end (or until stopped); ``on_start`` gets the sampler/runner.

    A local model is opened here unless ``engine`` is given; a model that cannot be loaded is
    logged to ``events.log`` and raised as one clear error.
    """
    try:
        if config.remote:
            return _run_remote(config, prompts, store, api_key=api_key, on_event=on_event,
                               on_start=on_start)
        owned = engine is None
        if engine is None:
            try:
                engine = open_local_model(config)
            except UserError as exc:
                store.log_event(f"sample error: model {config.model}: {exc}")
                raise
        try:
            sampler = LocalSampler(engine, config, prompts, store, on_event=on_event)
            if on_start is not None:
                on_start(sampler)
            return sampler.run()
        finally:
            if owned:
                engine.close()
    finally:
        store.close()


def open_local_model(config: SampleConfig) -> Any:
    """A GGUF for batched sampling (``config.batched``), else any engine the spec names."""
    path = Path(config.model).expanduser()
    from baize_tui.sdf import batched

    if config.batched and config.n > 1 and path.suffix.lower() == ".gguf" and path.is_file() \
            and batched.supported():
        from baize_tui.engines.llama import inspect_gguf
        from baize_tui.sdf.batched import BatchedGguf

        inspect_gguf(path)  # one clear error for a file that is not a usable GGUF
        return BatchedGguf(path, n_seq=config.n, max_tokens=config.max_tokens)
    from baize_tui.engines import open_engine

    return open_engine(config.model)


def _run_remote(config: SampleConfig, prompts: list[Seed], store: CandidateStore, *,
                api_key: str, on_event: Callable[[Event], None] | None,
                on_start: Callable[[Any], None] | None) -> RunStats:
    from baize_tui.sdf.runners import CandidateRunner

    run_config = remote_run_config(config)
    return run_in_fresh_loop(
        lambda: CandidateRunner(run_config, prompts, store, n=config.n, api_key=api_key,
                                empty_retries=config.empty_retries, spec=config.model,
                                on_event=on_event),
        on_start)
