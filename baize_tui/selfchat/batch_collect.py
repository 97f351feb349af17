"""Batch results to records: a job's downloaded files to outcome records, dialogues to the
``raw.jsonl`` / ``failed.jsonl`` records the live runner writes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from baize_tui.selfchat import batch_plan as bp
from baize_tui.selfchat.batch_jobs import BatchJob, BatchStore
from baize_tui.selfchat.runner import RunConfig

_WHY_MISSING = {
    "failed": "the batch failed validation: ",
    "expired": "the batch expired before this request ran",
    "cancelled": "the batch was cancelled before this request ran",
}


def read_job_results(jobs: BatchStore, job: BatchJob,
                     redact: Callable[[str], str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Outcome records of a terminal, downloaded job that are not in the results log yet.

    Every request of the job's input gets exactly one record: its result line, or a retryable
    failure named after the job's status when no usable line came back. Unparsable lines,
    results for a ``custom_id`` the job never held and repeated lines are skipped and named
    in the second return value.
    """
    wanted: list[str] = []
    path = jobs.path(job.input_name)
    if path.exists():
        wanted = [json.loads(line)["custom_id"] for line in path.read_bytes().splitlines() if line]
    wanted_set = set(wanted)
    logged = {r.get("cid") for r in jobs.results if r.get("job") == job.key}
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    for suffix in ("output", "errors"):
        fpath = jobs.path(f"{job.key}.{suffix}.jsonl")
        if not fpath.exists():
            continue
        for raw in fpath.read_bytes().splitlines():
            if not raw.strip():
                continue
            rec = bp.parse_result_line(raw)
            problem = rec.get("bad") or ("result for an unknown custom_id" if rec["cid"] not in wanted_set
                                         else "duplicate result line" if rec["cid"] in seen else "")
            if problem:
                problems.append(problem)
                continue
            seen.add(rec["cid"])
            if rec["cid"] not in logged:
                records.append(_stamp(rec, job, redact))
    why = _WHY_MISSING.get(job.status, "no result line for this request")
    if job.status == "failed":
        why += "; ".join(job.errors[:3])
    for cid in wanted:
        if cid not in seen and cid not in logged:
            records.append(_stamp({"cid": cid, "ok": False, "reason": f"batch_{job.status}",
                                   "retryable": True, "error": why[:300]}, job, redact))
    return records, problems


def _stamp(rec: dict[str, Any], job: BatchJob, redact: Callable[[str], str]) -> dict[str, Any]:
    rec["job"] = job.key
    rec["sid"] = rec["cid"].split(":", 1)[0]
    if "error" in rec:
        rec["error"] = redact(rec["error"])
    return rec


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _base(config: RunConfig, d: bp.Dialogue) -> dict[str, Any]:
    return {"id": d.sid, "seed": d.seed.text, "mode": config.mode, "model": config.model,
            "endpoint": urlsplit(config.base_url).hostname or ""}


def dialogue_record(config: RunConfig, d: bp.Dialogue) -> dict[str, Any]:
    """The ``raw.jsonl`` record of a finished dialogue (the live runner's fields)."""
    turns = d.parsed.turns if d.parsed is not None else d.turns
    return dict(_base(config, d), transcript=d.transcript, turns=[list(t) for t in turns],
                usage=d.usage(config.mode), finish_reasons=d.finish_reasons,
                termination=d.termination,
                params={"temperature": config.temperature, "max_tokens": config.max_tokens,
                        "max_turns": config.max_turns if config.mode == "v2" else None},
                elapsed_s=0.0, retries=0, time=_now(), via="batch")


def failed_record(config: RunConfig, d: bp.Dialogue) -> dict[str, Any]:
    """The ``failed.jsonl`` record of a failed or rejected dialogue."""
    rec = dict(_base(config, d), kind=d.final, reason=d.reason, retryable=d.retryable,
               error=d.error, usage=d.usage(config.mode), retries=0, time=_now(),
               via="batch", batch_gen=d.gen)
    if d.transcript or d.turns:
        rec.update(transcript=d.transcript, turns=[list(t) for t in d.turns],
                   termination=d.termination)
    return rec
