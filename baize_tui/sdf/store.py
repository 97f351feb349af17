"""The SDF run directory: the self-chat ``RunStore`` with SDF's file names.

Sampling and judging each get their own done/failed/state files but share the directory lock
(one writer at a time) and ``events.log``; torn last lines are repaired on open exactly as in
self-chat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.selfchat.store import RunStore, repair_jsonl

CANDIDATES = "candidates.jsonl"
SAMPLE_FAILED = "sample_failed.jsonl"
SAMPLE_STATE = "sample_state.json"
JUDGMENTS = "judgments.jsonl"
JUDGE_FAILED = "judge_failed.jsonl"
JUDGE_STATE = "judge_state.json"


class _SdfStore(RunStore):
    """The self-chat store with SDF's wording when the directory is busy."""

    def __init__(self, out: Path | str, **kwargs: Any) -> None:
        try:
            super().__init__(out, **kwargs)
        except UserError as exc:
            if "another self-chat run" not in str(exc):
                raise
            raise UserError(f"{Path(out).expanduser()}: another `sdf sample`, `sdf judge` or "
                            "`sdf run` is writing here; wait for it or stop it (`baize-tui sdf "
                            "status` shows its progress)") from None


class CandidateStore(_SdfStore):
    """``candidates.jsonl`` / ``sample_failed.jsonl`` / ``sample_state.json`` of a run dir."""

    @property
    def raw_path(self) -> Path:
        """``DIR/candidates.jsonl``."""
        return self.dir / CANDIDATES

    @property
    def failed_path(self) -> Path:
        """``DIR/sample_failed.jsonl``."""
        return self.dir / SAMPLE_FAILED

    @property
    def state_path(self) -> Path:
        """``DIR/sample_state.json``."""
        return self.dir / SAMPLE_STATE


class JudgeStore(_SdfStore):
    """``judgments.jsonl`` / ``judge_failed.jsonl`` / ``judge_state.json`` of a run dir."""

    @property
    def raw_path(self) -> Path:
        """``DIR/judgments.jsonl``."""
        return self.dir / JUDGMENTS

    @property
    def failed_path(self) -> Path:
        """``DIR/judge_failed.jsonl``."""
        return self.dir / JUDGE_FAILED

    @property
    def state_path(self) -> Path:
        """``DIR/judge_state.json``."""
        return self.dir / JUDGE_STATE


def require_run_dir(path: Path | str, *, what: str = "SDF run directory") -> Path:
    """``path`` as a directory that holds ``candidates.jsonl``, else a clear error."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise UserError(f"{directory}: no such {what}; create it with `baize-tui sdf sample "
                        f"--out {directory}`")
    if not (directory / CANDIDATES).exists():
        raise UserError(f"{directory}: no {CANDIDATES}; run `baize-tui sdf sample --out "
                        f"{directory}` first")
    return directory


def read_records(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The records of a JSONL file without modifying it (a live run may be writing)."""
    return repair_jsonl(path, truncate=False)


def first_per_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The first record of each ``id``, in file order."""
    out: dict[str, dict[str, Any]] = {}
    for rec in records:
        rid = rec.get("id")
        if isinstance(rid, str) and rid not in out:
            out[rid] = rec
    return out


def read_state(path: Path) -> dict[str, Any] | None:
    """A state file's JSON, ``None`` when absent."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        raise OperationFailed(f"{path}: corrupt; delete it to start the settings afresh "
                              "(the JSONL files are kept)") from None
