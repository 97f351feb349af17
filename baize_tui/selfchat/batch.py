"""Self-chat through the OpenAI Batch API: submit, poll, collect, resume across days.

Every *step* submits one request for every live dialogue that needs one (sharded into jobs
within the provider's limits): in v1 mode the transcript call, so one step normally does it;
in v2 mode step 1 carries every dialogue's first human turn, step 2 the AI answers, and so on
(2 x ``max_turns`` steps when nothing fails). A request that failed in a retryable way
(expired, cancelled, 429/5xx, no result line) is resubmitted in the next step, up to
``max_attempts`` times; a 4xx on a row fails that dialogue like a live 400 does.

Everything needed to carry on is on disk (``batch_jobs.BatchStore``) before the next remote
call: a re-run after a crash, a reboot or days later polls the same jobs, downloads their
files, collects what is not collected yet, and never submits a request whose job is still
open. A job created just before a crash, whose id never reached the disk, is found again by
its metadata (``baize_job``) before anything is resubmitted.

Finished dialogues are appended to ``raw.jsonl`` in seed order (a dialogue waits for the
ones before it), with the same records the live runner writes, so ``selfchat status`` and
``selfchat export`` work unchanged and export the same bytes as a live run of the seeds.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from baize_tui.redact import redact_text, register_secret
from baize_tui.selfchat import batch_plan as bp
from baize_tui.selfchat.batch_collect import dialogue_record, failed_record, read_job_results
from baize_tui.selfchat.batch_jobs import (
    LOCAL_STATES,
    PROVIDER_ACTIVE,
    TERMINAL,
    BatchJob,
    BatchStore,
)
from baize_tui.selfchat.runner import Event, FatalRunError, RunConfig, emit_event, redact_url
from baize_tui.selfchat.seeds import Seed
from baize_tui.selfchat.store import RunStore

FAILPOINT_ENV = "BAIZE_TUI_BATCH_FAILPOINT"
_FAILPOINT_HITS: Counter = Counter()


@dataclass
class BatchOptions:
    """Batch-mode settings (the generation settings are the ``RunConfig``'s)."""

    poll_interval: float = 60.0
    max_attempts: int = 3
    max_requests: int = bp.MAX_REQUESTS
    max_bytes: int = bp.MAX_BYTES
    discount: float = 0.5
    wait: bool = True


@dataclass
class BatchStats:
    """Counters of a batch session (read by the CLI and the TUI)."""

    total: int = 0
    previously_done: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0
    live: int = 0
    jobs: int = 0
    requests: int = 0
    bytes: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = 0.0
    estimate_cost: float | None = None
    estimate_tokens: int = 0
    prepare_s: float = 0.0
    collect_s: float = 0.0
    stop_reason: str = ""
    last_error: str = ""
    reasons: Counter = field(default_factory=Counter)
    warnings: Counter = field(default_factory=Counter)


def _failpoint(name: str) -> None:
    """Test hook: SIGKILL this process at a named stage (``BAIZE_TUI_BATCH_FAILPOINT=name[:N]``)."""
    spec = os.environ.get(FAILPOINT_ENV)
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want != name:
        return
    _FAILPOINT_HITS[name] += 1
    if _FAILPOINT_HITS[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class BatchRunner:
    """Drives a run directory's batch jobs; see the module docstring."""

    def __init__(self, config: RunConfig, seeds: list[Seed], store: RunStore, *, api_key: str,
                 options: BatchOptions | None = None, client: Any = None,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.config = config
        self.options = options or BatchOptions()
        self.store = store
        self.jobs = BatchStore(store.dir, fsync=config.fsync)
        self.on_event = on_event
        self.stats = BatchStats()
        self._api_key = api_key
        register_secret(api_key)  # masked by redact_text in every message, log line and record
        self._client = client
        self._stopping = False
        self._endpoint = redact_url(config.base_url)
        self.replayer = bp.Replayer(config, self.options.max_attempts)
        if "token" not in self.jobs.meta:
            self.jobs.meta["token"] = secrets.token_hex(4)
            self.jobs.save()
        for warning in self.jobs.warnings:
            self._emit("notice", warning)
        self._plan(seeds)

    # -- planning ------------------------------------------------------------------------
    def _plan(self, seeds: list[Seed]) -> None:
        done = self.store.done_ids()
        failures = self.store.latest_failures()
        self.dialogues: dict[str, bp.Dialogue] = {}
        for seed in seeds:
            if seed.id in done:
                self.stats.previously_done += 1
                continue
            prior = failures.get(seed.id)
            if (prior is not None and not prior.get("retryable", True) and prior.get("via") != "batch"
                    and not self.config.retry_rejected):
                continue  # a live run's permanent failure: skipped as a live re-run would
            self.dialogues[seed.id] = bp.Dialogue(seed)
        self.stats.total = len(seeds)
        for rec in self.jobs.results:
            d = self.dialogues.get(str(rec.get("sid")))
            if d is not None:
                self.replayer.apply(d, rec)
        self.jobs.compact()  # the texts now live in the dialogues
        for rec in self.store.raw_records + self.store.failed_records:
            if rec.get("via") != "batch":  # live spend; batch spend comes from the results log
                usage = rec.get("usage") or {}
                self.stats.tokens_in += int(usage.get("prompt_tokens", 0) or 0)
                self.stats.tokens_out += int(usage.get("completion_tokens", 0) or 0)
        for rec in self.jobs.results:
            if rec.get("ok"):
                self.stats.tokens_in += int(rec.get("p") or 0)
                self.stats.tokens_out += int(rec.get("c") or 0)
        self._finalize()
        revive = []
        for d in self.dialogues.values():
            if d.final in ("failed", "rejected") and (d.retryable or self.config.retry_rejected):
                self.replayer.revive(d)
                revive.append({"sid": d.sid, "revive": d.gen})
        # a permanent failure recorded earlier is skipped (as the live runner skips it)
        for sid in [s for s, d in self.dialogues.items() if d.final in ("failed", "rejected")]:
            del self.dialogues[sid]
        if revive:
            self.jobs.append_results(revive)
        self._count_live()

    def _count_live(self) -> None:
        self.stats.live = sum(1 for d in self.dialogues.values() if d.final is None)

    # -- control -------------------------------------------------------------------------
    def stop(self, reason: str = "stopped") -> None:
        """Submit nothing new; the session ends after the current call (jobs keep running)."""
        if not self._stopping:
            self._stopping = True
            self.stats.stop_reason = self.stats.stop_reason or reason
            self._emit("stop", reason)

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stopping

    def _emit(self, kind: str, message: str = "", record: dict[str, Any] | None = None) -> None:
        emit_event(self.store, self.on_event, kind, message, record,
                   logged=("pause", "error", "notice", "stop", "batch"))

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> BatchStats:
        """Advance until every dialogue is final (or, without ``wait``, as far as possible now)."""
        owns = self._client is None
        if owns:
            import openai

            self._client = openai.OpenAI(api_key=self._api_key, base_url=self.config.base_url,
                                         max_retries=3, timeout=self.config.timeout)
        try:
            self._project()
            while True:
                state = self.advance()
                if state != "waiting" or not self.options.wait:
                    if state == "waiting":
                        self.stats.stop_reason = self.stats.stop_reason or "detached"
                    break
                self._sleep(self.options.poll_interval)
                if self._stopping:
                    break
        finally:
            if owns:
                self._client.close()
                self._client = None
            self.jobs.close()
        if not self.stats.stop_reason:
            self.stats.stop_reason = "finished"
        return self.stats

    def _project(self) -> None:
        """Say what the rest of the run should cost, before anything is submitted."""
        live = [d for d in self.dialogues.values() if d.final is None]
        if not live:
            return
        requests, tok_in, tok_out = bp.project_remaining(self.config, live)
        price = self.config.price
        if price is None:
            money = "no price known for this model (add it under [selfchat.prices])"
        else:
            cost = (tok_in * price[0] + tok_out * price[1]) / 1e6
            d = self.options.discount
            full = f"${price[0] / (1 - d):g}/${price[1] / (1 - d):g}" if d < 1 else "?"
            money = (f"about ${cost:.4f} at the batch price (${price[0]:g}/${price[1]:g} per 1M "
                     f"in/out: {d:.0%} off {full})")
        self._emit("batch", f"projected: {len(live):,} dialogue(s), up to {requests:,} requests, "
                            f"~{tok_in + tok_out:,} tokens, {money}")

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stopping:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.2))

    def advance(self) -> str:
        """One pass: drive open jobs, then start the next step; ``finished`` / ``waiting`` / ``stopped``."""
        for job in list(self.jobs.active_jobs()):
            self._drive(job)
        if self.jobs.active_jobs():
            return "stopped" if self._stopping else "waiting"
        self._finalize()
        if self._stopping:
            return "stopped"
        t0 = time.process_time()
        live = [d for d in self.dialogues.values() if d.final is None]
        if not live:
            return "finished"
        live = self._within_budget(live)
        if not live:
            return "stopped"
        new_jobs = self._prepare(live)
        self.stats.prepare_s += time.process_time() - t0
        for job in new_jobs:
            if self._stopping:
                break
            self._drive(job)
        return "stopped" if self._stopping else "waiting"

    def _drive(self, job: BatchJob) -> None:
        import openai

        try:
            if job.status == "prepared":
                self._upload(job)
            if job.status == "uploaded":
                self._create(job)
            if job.status == "submitted" or job.status in PROVIDER_ACTIVE:
                self._poll(job)
            if job.status in TERMINAL and not job.downloaded:
                self._download(job)
            if job.downloaded and not job.collected:
                self._collect(job)
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise FatalRunError(f"{self._endpoint} refused the API key ({exc.status_code}): set "
                                "OPENAI_API_KEY or [openai] api_key in the config to a valid key") from None
        except openai.NotFoundError as exc:
            if job.status in LOCAL_STATES:
                raise FatalRunError(f"{self._endpoint} has no Batch API (404 on files/batches): "
                                    "run without --batch for this server") from None
            raise FatalRunError(f"{self._endpoint}: job {job.key} ({job.batch_id}) not found "
                                f"(404): {_short(exc)}") from None
        except openai.APIError as exc:
            msg = self._redact(f"job {job.key}: {type(exc).__name__}: {_short(exc)}")
            self.stats.last_error = msg
            self._emit("error", f"{msg}; will try again" if self.options.wait else msg)

    def _redact(self, text: str) -> str:
        """``text`` with the API key (registered in ``__init__``) and URL credentials masked."""
        return redact_text(text)

    def _within_budget(self, live: list[bp.Dialogue]) -> list[bp.Dialogue]:
        """The dialogues whose next request fits ``max_tokens_total`` / ``max_cost`` (estimated
        at the batch price, on top of what was spent); stops the session when none fits."""
        cfg = self.config
        by_cost = cfg.max_cost is not None and cfg.price is not None
        if cfg.max_tokens_total is None and not by_cost:
            return live
        tokens = self.stats.tokens_in + self.stats.tokens_out
        cost = self._cost() or 0.0
        fit: list[bp.Dialogue] = []
        for d in live:
            _, body = bp.next_request(cfg, d)
            est = bp.estimate_request_tokens(body, cfg.mode)
            out = int(body.get("max_tokens") or (512 if cfg.mode == "v1" else 160))
            est_cost = 0.0
            if by_cost and cfg.price is not None:
                est_cost = ((est - out) * cfg.price[0] + out * cfg.price[1]) / 1e6
            if cfg.max_tokens_total is not None and tokens + est > cfg.max_tokens_total:
                break
            if by_cost and cfg.max_cost is not None and cost + est_cost > cfg.max_cost:
                break
            tokens += est
            cost += est_cost
            fit.append(d)
        if not fit:
            self.stop(f"budget reached: the next step would pass --max-tokens-total/--max-cost "
                      f"({self.stats.tokens_in + self.stats.tokens_out:,} tokens, "
                      f"${self._cost() or 0.0:.4f} spent)")
        elif len(fit) < len(live):
            self._emit("notice", f"budget: submitting {len(fit):,} of {len(live):,} requests "
                                 "this step (the estimate of the rest would pass the budget)")
        return fit

    # -- stages --------------------------------------------------------------------------
    def _prepare(self, live: list[bp.Dialogue]) -> list[BatchJob]:
        step = self.jobs.last_step + 1
        lines: list[bytes] = []
        roles: list[str] = []
        tokens_in = tokens_out = 0
        for d in live:
            cid, body = bp.next_request(self.config, d)
            lines.append(bp.request_line(cid, body))
            roles.append(cid.rsplit(":", 1)[1])
            est = bp.estimate_request_tokens(body, self.config.mode)
            out = body.get("max_tokens") or (512 if self.config.mode == "v1" else 160)
            tokens_in += est - int(out)
            tokens_out += int(out)
        cost = None
        if self.config.price is not None:
            cost = (tokens_in * self.config.price[0] + tokens_out * self.config.price[1]) / 1e6
        jobs = []
        start = 0
        for shard_no, shard in enumerate(bp.shard_lines(lines, self.options.max_requests,
                                                         self.options.max_bytes), 1):
            shard_roles = Counter(bp.ROLE_NAMES[r] for r in roles[start:start + len(shard)])
            start += len(shard)
            data = b"".join(shard)
            share = len(shard) / len(lines)
            job = BatchJob(key=f"s{step:03d}-{shard_no:02d}", step=step, shard=shard_no,
                           requests=len(shard), bytes=len(data), roles=dict(shard_roles),
                           estimate_tokens=int((tokens_in + tokens_out) * share),
                           estimate_cost=None if cost is None else cost * share)
            self.jobs.write_file(job.input_name, data)
            jobs.append(job)
        for job in jobs:
            self.jobs.add_job(job)
        self.stats.estimate_tokens += tokens_in + tokens_out
        if cost is not None:
            self.stats.estimate_cost = (self.stats.estimate_cost or 0.0) + cost
        price = ("no price known for this model" if cost is None else
                 f"about ${cost:.4f} at the batch price ({self.options.discount:.0%} off)")
        self._emit("batch", f"step {step}: {len(lines):,} requests in {len(jobs)} job(s), "
                            f"~{tokens_in + tokens_out:,} tokens, {price}")
        _failpoint("prepared")
        return jobs

    def _upload(self, job: BatchJob) -> None:
        client = self._client
        name = f"baize-{self.jobs.meta['token']}-{job.input_name}"
        if self.jobs.meta.get(f"upload:{job.key}"):  # a crash may have hidden a finished upload
            for f in client.files.list(purpose="batch"):
                if f.filename == name:
                    self.jobs.update(job, status="uploaded", file_id=f.id)
                    return
        self.jobs.meta[f"upload:{job.key}"] = True
        self.jobs.save()
        with self.jobs.path(job.input_name).open("rb") as fh:
            obj = self._transfer_client().files.create(file=(name, fh, "application/jsonl"),
                                                       purpose="batch")
        _failpoint("uploaded")
        self.jobs.update(job, status="uploaded", file_id=obj.id)

    def _transfer_client(self) -> Any:
        """The client for file uploads and downloads (up to 200 MB: a longer timeout)."""
        return self._client.with_options(timeout=max(900.0, self.config.timeout))

    def _create(self, job: BatchJob) -> None:
        client = self._client
        tag = f"{self.jobs.meta['token']}:{job.key}"
        if self.jobs.meta.get(f"create:{job.key}"):  # created before a crash? adopt it
            found = self._find_batch(tag, job.file_id)
            if found is not None:
                self._emit("notice", f"job {job.key}: found batch {found.id} created before an "
                                     "interruption; not submitting it again")
                self._record_batch(job, found)
                return
        self.jobs.meta[f"create:{job.key}"] = True
        self.jobs.save()
        # no blind SDK retry here: a create that timed out may have happened, and retrying it
        # would submit every request twice; the next pass looks it up by its tag first
        obj = client.with_options(max_retries=0).batches.create(
            input_file_id=job.file_id, endpoint=bp.ENDPOINT, completion_window="24h",
            metadata={"baize_job": tag})
        _failpoint("created")
        self._record_batch(job, obj)
        self.stats.jobs += 1
        self.stats.requests += job.requests
        self.stats.bytes += job.bytes
        self._emit("batch", f"job {job.key}: submitted {job.requests:,} requests as {obj.id}")

    def _find_batch(self, tag: str, file_id: str | None) -> Any:
        for b in self._client.batches.list(limit=100):
            if (b.metadata or {}).get("baize_job") == tag or (file_id and b.input_file_id == file_id):
                return b
        return None

    def _record_batch(self, job: BatchJob, obj: Any) -> None:
        counts = obj.request_counts.model_dump() if obj.request_counts is not None else {}
        errors = [f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
                  for e in ((obj.errors.data or []) if obj.errors is not None else [])]
        status = obj.status if obj.status in TERMINAL + PROVIDER_ACTIVE else "submitted"
        changed = status != job.status
        # a cancel seen for the first time stops the session; a re-run after it resumes
        cancelled_now = status in ("cancelling", "cancelled") and job.status not in ("cancelling", "cancelled")
        self.jobs.update(job, status=status, batch_id=obj.id, counts=counts,
                         output_file_id=obj.output_file_id, error_file_id=obj.error_file_id,
                         errors=errors[:20])
        if changed:
            detail = f" ({'; '.join(errors[:3])})" if errors else ""
            self._emit("batch", f"job {job.key}: {status}{detail}")
        if cancelled_now and not self._stopping:
            self.stop("a job was cancelled; re-run to resubmit what it did not do")

    def _poll(self, job: BatchJob) -> None:
        self._record_batch(job, self._client.batches.retrieve(job.batch_id))

    def _download(self, job: BatchJob) -> None:
        for fid, suffix in ((job.output_file_id, "output"), (job.error_file_id, "errors")):
            if fid:
                data = self._transfer_client().files.content(fid).content
                self.jobs.write_file(f"{job.key}.{suffix}.jsonl", data)
        _failpoint("downloaded")
        self.jobs.update(job, downloaded=True)

    def _collect(self, job: BatchJob) -> None:
        t0 = time.process_time()
        records, problems = read_job_results(self.jobs, job, self._redact)
        for problem in problems:
            self.stats.warnings[problem] += 1
            self._emit("notice", f"job {job.key}: skipped a {problem}")
        if records:
            half = len(records) // 2
            self.jobs.append_results(records[:half])
            _failpoint("collect_mid")
            self.jobs.append_results(records[half:])
        for rec in records:
            d = self.dialogues.get(rec["sid"])
            if d is not None:
                self.replayer.apply(d, rec)
            if rec.get("ok"):
                self.stats.tokens_in += rec["p"]
                self.stats.tokens_out += rec["c"]
        self.jobs.update(job, collected=True)
        _failpoint("collected")
        self._finalize()
        self.stats.collect_s += time.process_time() - t0
        ok = sum(1 for r in records if r.get("ok"))
        self._emit("batch", f"job {job.key}: collected {ok:,} results, {len(records) - ok:,} failed rows")

    # -- writing dialogues ---------------------------------------------------------------
    def _finalize(self) -> None:
        """Append finished dialogues to raw.jsonl (in seed order) and failures to failed.jsonl."""
        done = self.store.done_ids()
        recorded = {sid: rec.get("batch_gen") for sid, rec in self.store.latest_failures().items()
                    if rec.get("via") == "batch"}
        blocked = False
        for d in self.dialogues.values():
            if d.final is None:
                blocked = True
            elif d.final == "done":
                if not blocked and d.sid not in done:
                    self.store.append_done(dialogue_record(self.config, d))
                    done.add(d.sid)
                    self.stats.done += 1
            elif recorded.get(d.sid, -1) != d.gen and d.sid not in done:
                self.store.append_failed(failed_record(self.config, d))
                recorded[d.sid] = d.gen
                self.stats.reasons[d.reason] += 1
                if d.final == "rejected":
                    self.stats.rejected += 1
                else:
                    self.stats.failed += 1
        self._count_live()
        self.stats.cost = self._cost()

    def _cost(self) -> float | None:
        if self.config.price is None:
            return None
        return (self.stats.tokens_in * self.config.price[0] + self.stats.tokens_out * self.config.price[1]) / 1e6


def _short(exc: Exception) -> str:
    msg = getattr(exc, "message", None) or str(exc)
    return " ".join(str(msg).split())[:300]
