"""``sdf status``: counts, the score histogram, judge failures and spend of a run directory.

:class:`RunWatcher` reads the run's JSONL files incrementally (by byte offset, complete lines
only), keeping just the counters, the verdicts' scores and each candidate line's offset, so
the TUI can poll a large run every second without re-reading it. Read-only: safe beside a
running ``sample`` or ``judge``; a file that shrank (a torn tail cut on resume) is re-read.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from baize_tui.sdf.store import (
    CANDIDATES,
    JUDGE_FAILED,
    JUDGE_STATE,
    JUDGMENTS,
    SAMPLE_FAILED,
    SAMPLE_STATE,
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


@dataclass
class _Tail:
    """New complete lines of one file since the last read."""

    path: Path
    offset: int = 0

    def read(self) -> tuple[list[tuple[int, bytes]], bool]:
        """(offset, line) pairs appended since last time, and whether the file was reset."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            reset = self.offset > 0
            self.offset = 0
            return [], reset
        reset = size < self.offset
        if reset:
            self.offset = 0
        if size == self.offset:
            return [], reset
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read(size - self.offset)
        end = data.rfind(b"\n") + 1
        out: list[tuple[int, bytes]] = []
        pos = 0
        while pos < end:
            nl = data.index(b"\n", pos)
            if nl > pos:
                out.append((self.offset + pos, data[pos:nl]))
            pos = nl + 1
        self.offset += end
        return out, reset


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("id"), str) else None


def _tokens(rec: dict[str, Any]) -> tuple[int, int]:
    usage = rec.get("usage") or {}
    return int(usage.get("prompt_tokens", 0) or 0), int(usage.get("completion_tokens", 0) or 0)


@dataclass
class RunWatcher:
    """Incremental view of an SDF run directory (see the module docstring)."""

    dir: Path
    cand_offsets: list[tuple[str, int]] = field(default_factory=list)  # (id, byte offset)
    cand_ids: set[str] = field(default_factory=set)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sample_fail: dict[str, str] = field(default_factory=dict)
    judge_fail: dict[str, str] = field(default_factory=dict)
    judge_tokens: list[int] = field(default_factory=lambda: [0, 0])
    bad_lines: int = 0

    def __post_init__(self) -> None:
        self.dir = Path(self.dir)
        self._tails = {name: _Tail(self.dir / name)
                       for name in (CANDIDATES, SAMPLE_FAILED, JUDGMENTS, JUDGE_FAILED)}

    def poll(self) -> RunWatcher:
        """Read whatever was appended since the last poll; returns ``self``."""
        for name, tail in self._tails.items():
            lines, reset = tail.read()
            if reset:
                self._reset(name)
            for offset, line in lines:
                rec = _parse(line)
                if rec is None:
                    self.bad_lines += 1
                    continue
                self._add(name, rec, offset)
        return self

    def _reset(self, name: str) -> None:
        if name == CANDIDATES:
            self.cand_offsets.clear()
            self.cand_ids.clear()
        elif name == SAMPLE_FAILED:
            self.sample_fail.clear()
        else:  # the judge's two files share the token count: re-read both
            self.verdicts.clear()
            self.judge_fail.clear()
            self.judge_tokens = [0, 0]
            for other in (JUDGMENTS, JUDGE_FAILED):
                if other != name:
                    self._tails[other].offset = 0

    def _add(self, name: str, rec: dict[str, Any], offset: int) -> None:
        rid = rec["id"]
        if name == CANDIDATES:
            if rid not in self.cand_ids:
                self.cand_ids.add(rid)
                self.cand_offsets.append((rid, offset))
        elif name == SAMPLE_FAILED:
            self.sample_fail[rid] = str(rec.get("reason", "failed"))
        elif name == JUDGMENTS:
            t_in, t_out = _tokens(rec)
            self.judge_tokens[0] += t_in
            self.judge_tokens[1] += t_out
            if rid not in self.verdicts:
                self.verdicts[rid] = {k: rec.get(k) for k in ("scores", "best", "best_score", "tied")}
        else:
            t_in, t_out = _tokens(rec)
            self.judge_tokens[0] += t_in
            self.judge_tokens[1] += t_out
            self.judge_fail[rid] = str(rec.get("reason", "failed"))

    def candidates_at(self, index: int) -> dict[str, Any] | None:
        """The ``candidates.jsonl`` record of the ``index``-th sampled prompt (read on demand)."""
        if not self.cand_offsets:
            return None
        _rid, offset = self.cand_offsets[index % len(self.cand_offsets)]
        with (self.dir / CANDIDATES).open("rb") as fh:
            fh.seek(offset)
            return _parse(fh.readline())

    def summary(self) -> dict[str, Any]:
        """Everything ``sdf status`` shows, as JSON-friendly data."""
        sample_state = read_state(self.dir / SAMPLE_STATE) or {}
        judge_state = read_state(self.dir / JUDGE_STATE) or {}
        sample_fail = {k: v for k, v in self.sample_fail.items() if k not in self.cand_ids}
        judge_fail = {k: v for k, v in self.judge_fail.items() if k not in self.verdicts}
        best_hist = [0] * 10
        all_hist = [0] * 10
        ties = 0
        for v in self.verdicts.values():
            best_hist[bucket_of(v.get("best_score") or 1)] += 1
            for s in v.get("scores") or []:
                all_hist[bucket_of(s)] += 1
            ties += len(v.get("tied") or []) > 1
        tin, tout = self.judge_tokens
        cfg, jcfg = sample_state.get("config") or {}, judge_state.get("config") or {}
        price = jcfg.get("price_per_1m")
        best_scores = [int(v.get("best_score") or 0) for v in self.verdicts.values()]
        return {
            "dir": str(self.dir),
            "model": cfg.get("model"),
            "n": cfg.get("n"),
            "judge": jcfg.get("model"),
            "judge_endpoint": jcfg.get("base_url"),
            "prompts": (sample_state.get("prompts") or {}).get("count"),
            "sampled": len(self.cand_ids),
            "sample_failed": len(sample_fail),
            "sample_reasons": dict(Counter(sample_fail.values())),
            "judged": len(self.verdicts),
            "judge_failed": len(judge_fail),
            "judge_reasons": dict(Counter(judge_fail.values())),
            "to_judge": max(0, len(self.cand_ids) - len(self.verdicts) - len(judge_fail)),
            "ties": ties,
            "mean_best": round(sum(best_scores) / len(best_scores), 2) if best_scores else None,
            "best_histogram": {bucket_label(b): c for b, c in enumerate(best_hist)},
            "score_histogram": {bucket_label(b): c for b, c in enumerate(all_hist)},
            "judge_tokens_in": tin,
            "judge_tokens_out": tout,
            "judge_cost": (tin * price[0] + tout * price[1]) / 1e6 if price else None,
            "warnings": [f"{self.bad_lines} unreadable line(s) skipped"] if self.bad_lines else [],
        }


def summarize(run_dir: Path | str) -> dict[str, Any]:
    """Everything ``sdf status`` shows (one full read of the run directory)."""
    return RunWatcher(require_run_dir(run_dir)).poll().summary()


def histogram_lines(hist: dict[str, int], width: int = 30) -> list[str]:
    """Text bars for a histogram (``label | ####  count``)."""
    top = max(hist.values(), default=0) or 1
    return [f"{label:>7} | {'#' * round(width * count / top):<{width}} {count}"
            for label, count in hist.items()]
