"""``sdf status``: counts, the score histogram, judge failures and spend of a run directory.

Read-only: safe beside a running ``sample`` or ``judge``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from baize_tui.sdf.store import (
    CANDIDATES,
    JUDGE_FAILED,
    JUDGE_STATE,
    JUDGMENTS,
    SAMPLE_FAILED,
    SAMPLE_STATE,
    first_per_id,
    read_records,
    read_state,
    require_run_dir,
)

BUCKET = 10  # histogram bins: 1-10, 11-20, ..., 91-100


def bucket_of(score: int) -> int:
    """The histogram bin (0..9) of a 1-100 score."""
    return min(9, max(0, (int(score) - 1) // BUCKET))


def bucket_label(b: int) -> str:
    """``"1-10"`` … ``"91-100"``."""
    return f"{b * BUCKET + 1}-{(b + 1) * BUCKET}"


def _latest_failures(path: Path, done: set[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for rec in read_records(path)[0]:
        rid = rec.get("id")
        if isinstance(rid, str) and rid not in done:
            out[rid] = rec
    return out


def _spend(records: list[dict[str, Any]]) -> tuple[int, int]:
    tin = tout = 0
    for rec in records:
        usage = rec.get("usage") or {}
        tin += int(usage.get("prompt_tokens", 0) or 0)
        tout += int(usage.get("completion_tokens", 0) or 0)
    return tin, tout


def summarize(run_dir: Path | str) -> dict[str, Any]:
    """Everything ``sdf status`` shows, as JSON-friendly data."""
    directory = require_run_dir(run_dir)
    sample_state = read_state(directory / SAMPLE_STATE) or {}
    judge_state = read_state(directory / JUDGE_STATE) or {}
    cand_recs, w1 = read_records(directory / CANDIDATES)
    verdict_recs, w2 = read_records(directory / JUDGMENTS)
    cands = first_per_id(cand_recs)
    verdicts = first_per_id(verdict_recs)
    sample_fail = _latest_failures(directory / SAMPLE_FAILED, set(cands))
    judge_fail_recs = read_records(directory / JUDGE_FAILED)[0]
    judge_fail = _latest_failures(directory / JUDGE_FAILED, set(verdicts))
    best_hist = [0] * 10
    all_hist = [0] * 10
    ties = 0
    for v in verdicts.values():
        best_hist[bucket_of(v.get("best_score", 1))] += 1
        for s in v.get("scores") or []:
            all_hist[bucket_of(s)] += 1
        ties += len(v.get("tied") or []) > 1
    tin, tout = _spend(verdict_recs + judge_fail_recs)
    price = (judge_state.get("config") or {}).get("price_per_1m")
    cost = (tin * price[0] + tout * price[1]) / 1e6 if price else None
    prompts = (sample_state.get("prompts") or {}).get("count")
    best_scores = [int(v.get("best_score", 0)) for v in verdicts.values()]
    return {
        "dir": str(directory),
        "model": (sample_state.get("config") or {}).get("model"),
        "n": (sample_state.get("config") or {}).get("n"),
        "judge": (judge_state.get("config") or {}).get("model"),
        "judge_endpoint": (judge_state.get("config") or {}).get("base_url"),
        "prompts": prompts,
        "sampled": len(cands),
        "sample_failed": len(sample_fail),
        "sample_reasons": dict(Counter(f.get("reason", "failed") for f in sample_fail.values())),
        "judged": len(verdicts),
        "judge_failed": len(judge_fail),
        "judge_reasons": dict(Counter(f.get("reason", "failed") for f in judge_fail.values())),
        "to_judge": max(0, len(cands) - len(verdicts) - len(judge_fail)),
        "ties": ties,
        "mean_best": round(sum(best_scores) / len(best_scores), 2) if best_scores else None,
        "best_histogram": {bucket_label(b): c for b, c in enumerate(best_hist)},
        "score_histogram": {bucket_label(b): c for b, c in enumerate(all_hist)},
        "judge_tokens_in": tin,
        "judge_tokens_out": tout,
        "judge_cost": cost,
        "warnings": w1 + w2,
    }


def histogram_lines(hist: dict[str, int], width: int = 30) -> list[str]:
    """Text bars for a histogram (``label | ####  count``)."""
    top = max(hist.values(), default=0) or 1
    return [f"{label:>7} | {'#' * round(width * count / top):<{width}} {count}"
            for label, count in hist.items()]
