"""Batch-mode state in the run directory: the jobs file and the results log.

``OUT/batch_jobs.json``
    every batch job of the run (written atomically after each change): its key, step, local
    input file, provider file and batch ids, status, request counts and what is left to do.
    Ids are written **before** the next stage starts, so a re-run after a crash polls the
    same job instead of submitting it again.
``OUT/batch_results.jsonl``
    one line per request outcome collected from a job's output or error file (the text and
    usage of a success; the reason of a failure), appended as it is read. Dialogue progress
    is rebuilt from it, so a finished turn is never lost, and a job collected twice (a crash
    mid-collect) adds nothing twice.
``OUT/batch/``
    the input files as uploaded and the output/error files as downloaded (kept for audit).

A job's life: ``prepared`` (input written) -> ``uploaded`` (file id known) -> ``submitted``
(batch id known) -> the provider's ``validating`` / ``in_progress`` / ``finalizing`` ->
a terminal ``completed`` / ``failed`` / ``expired`` / ``cancelled`` -> ``downloaded`` ->
``collected``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed
from baize_tui.selfchat.store import JsonlAppender, repair_jsonl

JOBS = "batch_jobs.json"
RESULTS = "batch_results.jsonl"
BATCH_DIR = "batch"

LOCAL_STATES = ("prepared", "uploaded", "submitted")
PROVIDER_ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class BatchJob:
    """One provider batch job (one shard of one step)."""

    key: str
    step: int
    shard: int
    requests: int
    bytes: int
    roles: dict[str, int] = field(default_factory=dict)
    status: str = "prepared"
    file_id: str | None = None
    batch_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    downloaded: bool = False
    collected: bool = False
    estimate_tokens: int = 0
    estimate_cost: float | None = None
    created: str = ""
    updated: str = ""

    @property
    def input_name(self) -> str:
        """The input file's name (also the uploaded file name)."""
        return f"{self.key}.input.jsonl"

    @property
    def active(self) -> bool:
        """Submitted (or about to be) and not collected yet."""
        return not self.collected

    def next_action(self) -> str:
        """What the driver does next for this job, in words."""
        if self.collected:
            return "done"
        if self.status == "prepared":
            return "upload the input file"
        if self.status == "uploaded":
            return "create the batch"
        if self.status in TERMINAL and not self.downloaded:
            return "download results"
        if self.downloaded:
            return "collect results"
        return "wait for the provider (poll)"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchJob:
        """A job from its saved form (unknown keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


_SLIM_KEYS = ("job", "cid", "sid", "ok", "p", "c", "revive")


def _slim(rec: dict[str, Any]) -> dict[str, Any]:
    """A result record without its text and error (what bookkeeping needs)."""
    return {k: rec[k] for k in _SLIM_KEYS if k in rec}


class BatchStore:
    """The batch files of one run directory (see the module docstring)."""

    def __init__(self, run_dir: Path | str, *, fsync: bool = False, readonly: bool = False) -> None:
        self.dir = Path(run_dir)
        self.fsync = fsync
        self.jobs: list[BatchJob] = []
        self.meta: dict[str, Any] = {}
        self._load()
        self.results, self.warnings = repair_jsonl(self.results_path, truncate=not readonly)
        self._appender: JsonlAppender | None = None

    @property
    def jobs_path(self) -> Path:
        """``OUT/batch_jobs.json``."""
        return self.dir / JOBS

    @property
    def results_path(self) -> Path:
        """``OUT/batch_results.jsonl``."""
        return self.dir / RESULTS

    @property
    def files_dir(self) -> Path:
        """``OUT/batch/``."""
        return self.dir / BATCH_DIR

    def _load(self) -> None:
        try:
            data = json.loads(self.jobs_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except ValueError:
            raise OperationFailed(f"{self.jobs_path}: corrupt; the batch ids in it are needed to "
                                  "collect results (restore it from a backup, or check the "
                                  "provider's dashboard)") from None
        self.jobs = [BatchJob.from_dict(j) for j in data.get("jobs", [])]
        self.meta = dict(data.get("meta") or {})

    def save(self) -> None:
        """Write the jobs file atomically."""
        data = {"version": 1, "updated": _now(), "meta": self.meta,
                "jobs": [asdict(j) for j in self.jobs]}
        try:
            atomic_write_text(self.jobs_path, json.dumps(data, indent=1) + "\n")
        except OSError as exc:
            raise OperationFailed(f"{self.jobs_path}: cannot write ({exc.strerror})") from None

    def update(self, job: BatchJob, **changes: Any) -> None:
        """Change a job and save at once."""
        for key, value in changes.items():
            setattr(job, key, value)
        job.updated = _now()
        self.save()

    def add_job(self, job: BatchJob) -> None:
        """Record a new (prepared) job."""
        job.created = job.updated = _now()
        self.jobs.append(job)
        self.save()

    def active_jobs(self) -> list[BatchJob]:
        """Jobs not collected yet."""
        return [j for j in self.jobs if not j.collected]

    @property
    def last_step(self) -> int:
        """The highest step number so far (0 before the first)."""
        return max((j.step for j in self.jobs), default=0)

    # files ----------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """``OUT/batch/NAME``."""
        return self.files_dir / name

    def write_file(self, name: str, data: bytes) -> Path:
        """Write ``OUT/batch/NAME`` atomically (through a temp file and a rename)."""
        import os
        import tempfile

        self.files_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(name)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.files_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    # results --------------------------------------------------------------------------
    def append_results(self, records: list[dict[str, Any]]) -> None:
        """Append outcome records to the results log (kept in memory without their text)."""
        if self._appender is None:
            self._appender = JsonlAppender(self.results_path, fsync=self.fsync)
        for rec in records:
            self._appender.append(rec)
            self.results.append(_slim(rec))

    def compact(self) -> None:
        """Drop the texts of the results held in memory (once dialogues were rebuilt)."""
        self.results = [_slim(r) for r in self.results]

    def close(self) -> None:
        """Close the results log."""
        if self._appender is not None:
            self._appender.close()
            self._appender = None
