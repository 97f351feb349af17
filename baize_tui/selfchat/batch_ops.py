"""Batch-mode operations besides running: the status report, cancelling jobs, the batch price.

Shared by ``baize-tui selfchat status|cancel`` and the TUI's self-chat screen.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.selfchat.batch_jobs import JOBS, PROVIDER_ACTIVE, BatchStore

DEFAULT_DISCOUNT = 0.5


def batch_discount(config: dict[str, Any]) -> float:
    """The Batch API discount: config ``[selfchat] batch_discount`` (default 0.5 = 50% off)."""
    value = (config.get("selfchat") or {}).get("batch_discount", DEFAULT_DISCOUNT)
    try:
        discount = float(value)
    except (TypeError, ValueError):
        raise UserError(f"[selfchat] batch_discount = {value!r} in the config: expected a number "
                        "between 0 and 1 (0.5 = half price)") from None
    if not 0.0 <= discount < 1.0:
        raise UserError(f"[selfchat] batch_discount = {discount} in the config: expected a number "
                        "from 0 up to (not including) 1")
    return discount


def batch_price(price: tuple[float, float] | None, discount: float) -> tuple[float, float] | None:
    """The per-1M (input, output) price after the batch discount."""
    if price is None:
        return None
    return price[0] * (1 - discount), price[1] * (1 - discount)


def has_batch(run_dir: Path | str) -> bool:
    """Whether the run directory has batch state."""
    return (Path(run_dir) / JOBS).exists()


def open_job_count(run_dir: Path | str) -> int:
    """How many batch jobs of the run are not collected yet (0 without batch state)."""
    if not has_batch(run_dir):
        return 0
    return len(BatchStore(run_dir, readonly=True).active_jobs())


def batch_summary(run_dir: Path | str, store: BatchStore | None = None) -> dict[str, Any] | None:
    """Jobs (status, counts, next action) and totals of a run's batch mode, or ``None``.

    ``store`` is a running session's own ``BatchStore`` (read in memory, not from disk).
    """
    if store is None:
        if not has_batch(run_dir):
            return None
        store = BatchStore(run_dir, readonly=True)
    jobs = []
    for j in list(store.jobs):
        jobs.append({"key": j.key, "step": j.step, "status": j.status, "batch_id": j.batch_id,
                     "requests": j.requests, "bytes": j.bytes, "roles": j.roles,
                     "counts": j.counts, "errors": j.errors[:3], "collected": j.collected,
                     "next": j.next_action(), "estimate_cost": j.estimate_cost,
                     "updated": j.updated})
    active = [j for j in store.jobs if not j.collected]
    results = Counter("ok" if r.get("ok") else "failed" for r in list(store.results) if "cid" in r)
    if active:
        waiting = [j for j in active if j.status in PROVIDER_ACTIVE or j.status == "submitted"]
        next_action = (f"{len(waiting)} job(s) at the provider: re-run `selfchat run --batch` "
                       "(same options) to poll and collect" if waiting else
                       "re-run `selfchat run --batch` to finish submitting/collecting")
    else:
        next_action = "re-run `selfchat run --batch` to submit the next step (if dialogues remain)"
    return {
        "steps": store.last_step,
        "jobs": jobs,
        "submitted_jobs": sum(1 for j in store.jobs if j.batch_id),
        "submitted_requests": sum(j.requests for j in store.jobs if j.batch_id),
        "submitted_bytes": sum(j.bytes for j in store.jobs if j.batch_id),
        "results_ok": results["ok"],
        "results_failed": results["failed"],
        "active": len(active),
        "next": next_action,
        "warnings": store.warnings,
    }


def cancel_jobs(run_dir: Path | str, *, base_url: str, api_key: str, client: Any = None) -> list[str]:
    """Ask the provider to cancel every open job; returns one line per job.

    The jobs file is updated when no run holds the directory; a running ``run --batch``
    sees the cancellation at its next poll, collects what finished and stops.
    """
    import openai

    from baize_tui.selfchat.store import _lock_run_dir

    if not has_batch(run_dir):
        raise UserError(f"{run_dir}: no batch jobs here (batch_jobs.json is missing)")
    store = BatchStore(run_dir, readonly=True)
    try:
        lock: int | None = _lock_run_dir(Path(run_dir))
    except UserError:
        lock = None  # a run is polling: it records the new status itself
    own = client is None
    if own:
        client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=3)
    lines = []
    try:
        for job in store.active_jobs():
            if not job.batch_id:
                lines.append(f"{job.key}: not submitted ({job.status}); nothing to cancel")
                continue
            try:
                obj = client.batches.cancel(job.batch_id)
            except openai.APIError as exc:
                raise OperationFailed(f"cancelling {job.batch_id} at {base_url} failed: "
                                      f"{type(exc).__name__}: {getattr(exc, 'message', exc)}") from None
            lines.append(f"{job.key}: {job.batch_id} {obj.status}")
            if lock is not None:
                store.update(job, status=obj.status)
    finally:
        if own:
            client.close()
        if lock is not None:
            import os

            os.close(lock)
    return lines
