"""Fine-tuning run directories: start, watch, stop, resume and list runs, without a UI.

A run lives in one directory; every piece of state is a file in it, so a closed terminal, a
dropped SSH connection or a restarted TUI loses nothing and can re-attach:

``config.toml``   resolved settings and their hash (:class:`~baize_tui.train.settings.TrainConfig`)
``run.json``      launcher facts: pid (= process group), argv, start time, data fingerprint
``status.json``   the trainer's state, progress and ETA (atomic rewrites)
``metrics.jsonl`` one line per logged step (``kind: "train"``) or evaluation (``"eval"``)
``control.json``  requests to the trainer: ``{"stop": true, "save": true}`` or ``{"save": true}``
``train.log``     the trainer's stdout and stderr
``checkpoints/checkpoint-N/``  resumable Trainer checkpoints; ``adapter/`` the final PEFT adapter

This module is the directory itself and the index of runs. The UI side only reads files:
:class:`Run` (status, metrics, log) and :class:`JsonlTail` / :class:`TextTail` (incremental
reads by byte offset).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import UserError
from baize_tui.paths import get_paths
from baize_tui.procs import process_alive
from baize_tui.train.settings import TrainConfig

WORKER_MODULE = "baize_tui.train.worker"
ACTIVE_STATES = ("starting", "checking_base", "loading_dataset", "loading_model", "training", "evaluating",
                 "saving", "stopping")
FINAL_STATES = ("completed", "stopped", "cancelled", "error", "killed", "interrupted")
# Exit status of ``train run --wait`` (and of the worker) per final state.
EXIT_CODES = {"completed": 0, "stopped": 130, "cancelled": 130, "error": 1, "killed": 1,
              "interrupted": 1}

# -- small file helpers ----------------------------------------------------------------------


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temp file and a rename."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or ``None`` when missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class JsonlTail:
    """Reads the records appended to a JSONL file since the last call.

    Keeps a byte offset and never re-parses what it has read; a partial last line waits for
    its newline. When the file was replaced or shrank (``train resume`` rewrites
    ``metrics.jsonl`` without the steps it will redo), it starts over and says so.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.offset = 0
        self._ino: int | None = None

    def read_new(self) -> tuple[list[dict[str, Any]], bool]:
        """``(new records, reset)``; ``reset`` means drop what you had and use these."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            reset = self.offset > 0
            self.offset, self._ino = 0, None
            return [], reset
        reset = False
        if self._ino is not None and (st.st_ino != self._ino or st.st_size < self.offset):
            self.offset, reset = 0, True
        self._ino = st.st_ino
        if st.st_size == self.offset:
            return [], reset
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        records = []
        for line in chunk[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records, reset


class TextTail:
    """The text appended to a log file since the last call (whole lines only)."""

    def __init__(self, path: Path, *, last_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.offset = 0
        if last_bytes is not None:
            try:
                self.offset = max(0, self.path.stat().st_size - last_bytes)
            except FileNotFoundError:
                pass

    def read_new(self) -> str:
        """New complete lines (decoded leniently)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return ""
        if size < self.offset:
            self.offset = 0
        if size == self.offset:
            return ""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return chunk[:end].decode("utf-8", errors="replace")


# -- the run directory -------------------------------------------------------------------------


@dataclass
class Run:
    """One run directory (nothing is read until asked)."""

    dir: Path

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).expanduser().absolute()

    # paths
    @property
    def config_file(self) -> Path:
        """Resolved settings."""
        return self.dir / "config.toml"

    @property
    def run_file(self) -> Path:
        """Launcher facts."""
        return self.dir / "run.json"

    @property
    def status_file(self) -> Path:
        """Trainer status."""
        return self.dir / "status.json"

    @property
    def metrics_file(self) -> Path:
        """Per-step metrics."""
        return self.dir / "metrics.jsonl"

    @property
    def control_file(self) -> Path:
        """Requests to the trainer."""
        return self.dir / "control.json"

    @property
    def log_file(self) -> Path:
        """Trainer stdout and stderr."""
        return self.dir / "train.log"

    @property
    def checkpoints_dir(self) -> Path:
        """The Trainer's output_dir."""
        return self.dir / "checkpoints"

    @property
    def adapter_dir(self) -> Path:
        """The final adapter."""
        return self.dir / "adapter"

    @classmethod
    def open(cls, directory: Path | str) -> Run:
        """An existing run; :class:`UserError` when ``directory`` is not one."""
        run = cls(Path(directory))
        if not run.config_file.exists():
            if not run.dir.exists():
                raise UserError(f"{run.dir}: no such run directory")
            raise UserError(f"{run.dir}: not a training run directory (no config.toml)")
        return run

    # reading
    def config(self) -> TrainConfig:
        """The run's settings."""
        return TrainConfig.from_toml_file(self.config_file)

    def info(self) -> dict[str, Any]:
        """``run.json`` (empty before the first launch)."""
        return read_json(self.run_file) or {}

    def alive(self) -> bool:
        """Whether the trainer process (group leader) is running."""
        info = self.info()
        return process_alive(info.get("pid"), str(self.dir), started_by=info.get("launched"))

    def raw_status(self) -> dict[str, Any]:
        """``status.json`` as written."""
        return read_json(self.status_file) or {}

    def status(self) -> dict[str, Any]:
        """``status.json``, corrected when the trainer is gone without saying so (killed, crashed,
        or the machine restarted; a pid now used by another process does not count): state
        ``interrupted``, and the message says how to resume."""
        status = self.raw_status()
        if not status:
            status = {"state": "new" if not self.info() else "starting"}
        state = status.get("state")
        if state in ACTIVE_STATES and not self.alive():
            # "starting" is written just before the launch and run.json just after it: a
            # run.json older than the status means the launch is still under way.
            launching = state == "starting" and \
                float(self.info().get("launched", 0)) < float(status.get("updated", 0))
            if not launching:
                status = dict(status)
                ckpt = self.last_checkpoint()
                hint = (f"; `baize-tui train resume {self.dir}` continues from {ckpt.name}"
                        if ckpt else "; see train.log")
                status.update(state="interrupted", message=f"the trainer stopped without a word "
                              f"(killed, crashed or the machine restarted) while {state}{hint}")
        return status

    def metrics(self) -> list[dict[str, Any]]:
        """Every metrics record (use :meth:`metrics_tail` to follow a live run)."""
        return JsonlTail(self.metrics_file).read_new()[0]

    def metrics_tail(self) -> JsonlTail:
        """An incremental reader of ``metrics.jsonl``."""
        return JsonlTail(self.metrics_file)

    def log_tail(self, last_bytes: int | None = 64 * 1024) -> TextTail:
        """An incremental reader of ``train.log`` starting near its end."""
        return TextTail(self.log_file, last_bytes=last_bytes)

    def checkpoints(self) -> list[Path]:
        """Complete checkpoints (``trainer_state.json`` is written last), oldest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        found = []
        for path in self.checkpoints_dir.glob("checkpoint-*"):
            suffix = path.name.split("-", 1)[1]
            if suffix.isdigit() and (path / "trainer_state.json").exists():
                found.append((int(suffix), path))
        return [p for _, p in sorted(found)]

    def last_checkpoint(self) -> Path | None:
        """The newest complete checkpoint."""
        found = self.checkpoints()
        return found[-1] if found else None

    def summary(self) -> dict[str, Any]:
        """Status plus the latest metrics, for ``train status`` / ``train list`` and a UI."""
        status = self.status()
        records = self.metrics()
        train = [r for r in records if r.get("kind") == "train"]
        evals = [r for r in records if r.get("kind") == "eval"]
        last = train[-1] if train else {}
        try:
            config = self.config()
            base, data, cfg_hash = config.base, config.data, config.config_hash()
        except UserError:
            base, data, cfg_hash = None, [], None
        ckpt = self.last_checkpoint()
        return {
            "dir": str(self.dir),
            "state": status.get("state"),
            "message": status.get("message", ""),
            "base": base,
            "data": data,
            "config_hash": cfg_hash,
            "pid": self.info().get("pid"),
            "alive": self.alive(),
            "step": status.get("step", last.get("step", 0)),
            "max_steps": status.get("max_steps", last.get("max_steps")),
            "epoch": last.get("epoch"),
            "loss": last.get("loss"),
            "eval_loss": evals[-1].get("eval_loss") if evals else None,
            "lr": last.get("lr"),
            "tokens_per_s": last.get("tokens_per_s"),
            "useful_tokens_per_s": last.get("useful_tokens_per_s"),
            "raw_tokens_per_s": last.get("raw_tokens_per_s"),
            "padding_fraction": last.get("padding_fraction"),
            "eta_s": status.get("eta_s"),
            "mem_reserved_mb": last.get("mem_reserved_mb"),
            "checkpoint": str(ckpt) if ckpt else None,
            "adapter": str(self.adapter_dir) if (self.adapter_dir / "adapter_config.json").exists()
            else None,
            "started": self.info().get("started"),
            "updated": status.get("updated"),
        }


# -- discovery ----------------------------------------------------------------------------------


def _index_file() -> Path:
    return get_paths().runs_dir / "index.jsonl"


def register_run(run: Run) -> None:
    """Remember a run directory so ``train list`` finds it wherever it is."""
    index = _index_file()
    index.parent.mkdir(parents=True, exist_ok=True)
    known = {r.get("dir") for r in JsonlTail(index).read_new()[0]}
    if str(run.dir) not in known:
        with open(index, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"dir": str(run.dir), "created": time.time()}) + "\n")


def list_runs() -> list[Run]:
    """Runs under the default runs directory and every registered one that still exists."""
    seen: dict[str, Run] = {}
    root = get_paths().runs_dir
    candidates = [Path(r["dir"]) for r in JsonlTail(_index_file()).read_new()[0] if "dir" in r]
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir())
    for path in candidates:
        if (path / "config.toml").exists() and str(path) not in seen:
            seen[str(path)] = Run(path)
    return sorted(seen.values(), key=lambda r: r.info().get("started") or 0)
