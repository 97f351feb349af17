"""``sdf export``: the training set, each judged prompt with its best reply.

``messages`` (default): chat JSONL ``{"messages": [{"role": "user", ...}, {"role":
"assistant", ...}], "meta": {...}}``; ``baize``: Baize's released JSON array of ``{"topic",
"input"}``. Both are formats ``baize-tui train run --data`` reads. Written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed, UserError
from baize_tui.sdf.store import CANDIDATES, JUDGMENTS, first_per_id, read_records, require_run_dir
from baize_tui.selfchat.transcript import render_baize

FORMATS = ("messages", "baize")


@dataclass
class ExportResult:
    """What an export wrote and left out."""

    path: Path
    written: int
    below_min: int
    unmatched: int


def best_pairs(run_dir: Path | str, *, min_score: int | None = None) -> tuple[list[dict], int, int]:
    """``[{"id", "prompt", "reply", "score"}]`` in the order the prompts were sampled (so the
    file does not depend on which judge call finished first), plus counts left out (best
    score below ``min_score``; verdict without a matching candidate line)."""
    directory = require_run_dir(run_dir)
    cands = first_per_id(read_records(directory / CANDIDATES)[0])
    verdicts = first_per_id(read_records(directory / JUDGMENTS)[0])
    position = {pid: i for i, pid in enumerate(cands)}
    pairs: list[dict] = []
    below = unmatched = 0
    for pid, verdict in sorted(verdicts.items(), key=lambda kv: position.get(kv[0], len(position))):
        rec = cands.get(pid)
        best = verdict.get("best")
        if rec is None or not isinstance(best, int) or not 0 <= best < len(rec["candidates"]):
            unmatched += 1
            continue
        score = int(verdict.get("best_score", 0))
        if min_score is not None and score < min_score:
            below += 1
            continue
        pairs.append({"id": pid, "prompt": rec["prompt"], "reply": rec["candidates"][best]["text"],
                      "score": score})
    return pairs, below, unmatched


def export_best(run_dir: Path | str, output: Path | str, *, fmt: str = "messages",
                min_score: int | None = None) -> ExportResult:
    """Write the best reply per judged prompt to ``output``."""
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}")
    pairs, below, unmatched = best_pairs(run_dir, min_score=min_score)
    if not pairs:
        raise UserError(f"{run_dir}: nothing to export (no judged prompt"
                        + (f" with a best score of at least {min_score}" if min_score else "")
                        + "); run `baize-tui sdf judge` first")
    if fmt == "messages":
        text = "".join(json.dumps({"messages": [{"role": "user", "content": p["prompt"]},
                                                {"role": "assistant", "content": p["reply"]}],
                                   "meta": {"id": p["id"], "score": p["score"], "source": "sdf"}},
                                  ensure_ascii=False) + "\n" for p in pairs)
    else:
        text = json.dumps([{"topic": p["prompt"], "input": render_baize([(p["prompt"], p["reply"])])}
                           for p in pairs])
    path = Path(output).expanduser()
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise OperationFailed(f"{path}: cannot write ({exc.strerror})") from None
    return ExportResult(path, len(pairs), below, unmatched)
