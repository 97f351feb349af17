"""How the trainer process reports and obeys: status and metrics files, control.json, signals.

Used by :mod:`baize_tui.train.worker` (which re-exports these names). Only rank 0 writes
``status.json`` (atomic) and ``metrics.jsonl`` (one flushed line per logged step); a stop
decision is read from ``control.json`` on rank 0 and broadcast, so every rank leaves at the same
step. SIGTERM/SIGINT set :data:`FLAGS` (the callback leaves at the next step without saving).
Heavy imports (torch, transformers) happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from typing import Any

from baize_tui.train.packing import batch_token_counts
from baize_tui.train.runs import Run, read_json, write_json_atomic


class Cancelled(BaseException):
    """A signal arrived before training started (or a second one during it)."""


class Flags:
    """What signal handlers and the callback share."""

    def __init__(self) -> None:
        self.signals = 0
        self.in_training = False


FLAGS = Flags()


def _on_signal(signum: int, _frame: Any) -> None:
    FLAGS.signals += 1
    if not FLAGS.in_training or FLAGS.signals > 1:
        raise Cancelled(signal.Signals(signum).name)


class StatusWriter:
    """Rank 0's ``status.json``: merged fields, atomic writes, at most one per second mid-run."""

    def __init__(self, run: Run, enabled: bool) -> None:
        self.run = run
        self.enabled = enabled
        self.data: dict[str, Any] = {"pid": os.getpid(), "started": time.time()}
        self._last = 0.0

    def update(self, state: str | None = None, *, throttle: bool = False, **fields: Any) -> None:
        """Merge ``fields`` (and the state) and write, unless throttled."""
        if state is not None:
            self.data["state"] = state
        self.data.update(fields)
        now = time.time()
        if not self.enabled or (throttle and now - self._last < 1.0):
            return
        self._last = now
        self.data["updated"] = now
        write_json_atomic(self.run.status_file, self.data)


class MetricsWriter:
    """Rank 0's ``metrics.jsonl``: one line per record, flushed."""

    def __init__(self, run: Run, enabled: bool) -> None:
        self.fh = open(run.metrics_file, "a", encoding="utf-8") if enabled else None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self.fh is not None:
            self.fh.write(json.dumps(record) + "\n")
            self.fh.flush()

    def close(self) -> None:
        """Close the file."""
        if self.fh is not None:
            self.fh.close()


class Recorder:
    """Samples and tokens seen by the training steps (filled by the Trainer subclass)."""

    def __init__(self) -> None:
        self.sample_ids: list[int] = []
        self.tokens = 0
        self.positions = 0  # tokens computed, padding included

    def add(self, ids: list[int], tokens: int, positions: int | None = None) -> None:
        """One micro-batch trained: ``tokens`` real ones out of ``positions`` computed."""
        self.sample_ids.extend(ids)
        self.tokens += tokens
        self.positions += tokens if positions is None else positions

    def take_digest(self) -> str:
        """A short hash of the samples since the last call (checks the data order on resume)."""
        blob = ",".join(map(str, self.sample_ids)).encode()
        self.sample_ids = []
        return hashlib.sha1(blob).hexdigest()[:12]


def throughput_fields(tokens: int, positions: int, elapsed: float) -> dict[str, Any]:
    """Useful tokens/s (real tokens: they carry loss or context), raw tokens/s (every position
    computed, padding included) and the padding fraction, over this launch."""
    if elapsed <= 0:
        return {"useful_tokens_per_s": None, "raw_tokens_per_s": None,
                "padding_fraction": None}
    return {"useful_tokens_per_s": round(tokens / elapsed, 1),
            "raw_tokens_per_s": round(positions / elapsed, 1),
            "padding_fraction": round(1 - tokens / positions, 4) if positions else None}


def _memory_mb() -> tuple[float | None, float | None]:
    import torch

    if not torch.cuda.is_available():
        return None, None
    return (round(torch.cuda.max_memory_allocated() / 2**20, 1),
            round(torch.cuda.max_memory_reserved() / 2**20, 1))


def _broadcast(values: list[int], device: Any) -> list[int]:
    """Rank 0's ``values`` on every rank (a no-op on one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.long, device=device)
    dist.broadcast(tensor, src=0)
    return tensor.tolist()


def read_control(run: Run, step: int, seen_mtime: float) -> tuple[int, int, float]:
    """(stop, save, mtime) requested in ``control.json`` for ``step``: stop 2 after a signal,
    1 on request; a save-only request counts once per file version (``seen_mtime``)."""
    stop = save = 0
    if FLAGS.signals:
        return 2, 0, seen_mtime
    try:
        mtime = run.control_file.stat().st_mtime
    except FileNotFoundError:
        return 0, 0, seen_mtime
    req = read_json(run.control_file) or {}
    at_step = req.get("at_step")
    if at_step is not None and step < int(at_step):
        return 0, 0, seen_mtime
    if req.get("stop"):
        stop, save = 1, int(bool(req.get("save", True)))
    elif req.get("save") and mtime != seen_mtime:
        save = 1
        seen_mtime = mtime
        run.control_file.unlink(missing_ok=True)
    return stop, save, seen_mtime


def make_callback(run: Run, status: StatusWriter, metrics: MetricsWriter, recorder: Recorder,
                  *, is_main: bool, base_tokens: int):
    """The ``TrainerCallback`` that writes metrics/status and obeys ``control.json``."""
    from transformers import TrainerCallback

    class RunCallback(TrainerCallback):
        def __init__(self) -> None:
            self.start_step = 0
            self.t0 = time.time()
            self.tokens_at_start = 0
            self.positions_at_start = 0
            self.stop_reason: str | None = None
            self._control_mtime = 0.0

        def _eta(self, state: Any) -> tuple[float, float | None]:
            elapsed = time.time() - self.t0
            done = state.global_step - self.start_step
            if done <= 0 or not state.max_steps:
                return elapsed, None
            return elapsed, max(0.0, (state.max_steps - state.global_step) * elapsed / done)

        def on_train_begin(self, args, state, control, **kwargs):
            FLAGS.in_training = True
            self.start_step = state.global_step
            self.t0 = time.time()
            self.tokens_at_start = recorder.tokens
            self.positions_at_start = recorder.positions
            status.update("training", message=f"training from step {state.global_step}",
                          step=state.global_step, max_steps=state.max_steps,
                          start_step=state.global_step, progress=state.global_step / max(1, state.max_steps))

        def _read_control(self, step: int) -> tuple[int, int]:
            """(stop, save) requested on rank 0 for this step."""
            stop, save, self._control_mtime = read_control(run, step, self._control_mtime)
            return stop, save

        def on_step_end(self, args, state, control, **kwargs):
            flags = self._read_control(state.global_step) if is_main else (0, 0)
            stop, save = _broadcast(list(flags), args.device)
            if save:
                control.should_save = True
            if stop:
                control.should_training_stop = True
                control.should_log = True
                self.stop_reason = "stopped" if stop == 1 else "cancelled"
                status.update("stopping", message="saving a checkpoint, then exiting" if save
                              else "leaving at this step (signal)")
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            elapsed, eta = self._eta(state)
            mem_alloc, mem_reserved = _memory_mb()
            if "loss" in logs:
                session_tokens = recorder.tokens - self.tokens_at_start
                record = {
                    "kind": "train", "step": state.global_step, "max_steps": state.max_steps,
                    "epoch": round(state.epoch or 0.0, 4), "loss": logs.get("loss"),
                    "grad_norm": logs.get("grad_norm"), "lr": logs.get("learning_rate"),
                    "tokens_seen": base_tokens + recorder.tokens,
                    "tokens_per_s": round(session_tokens / elapsed, 1) if elapsed > 0 else None,
                    "start_step": self.start_step, "elapsed_s": round(elapsed, 2),
                    "eta_s": None if eta is None else round(eta, 1),
                    "mem_alloc_mb": mem_alloc, "mem_reserved_mb": mem_reserved,
                    "samples": recorder.take_digest(), "time": time.time(),
                }
                record.update(throughput_fields(session_tokens,
                                                recorder.positions - self.positions_at_start,
                                                elapsed))
                metrics.write(record)
                status.update(throttle=True, step=state.global_step, max_steps=state.max_steps,
                              progress=round(state.global_step / max(1, state.max_steps), 4),
                              eta_s=record["eta_s"], loss=record["loss"],
                              tokens_per_s=record["tokens_per_s"], epoch=record["epoch"],
                              useful_tokens_per_s=record["useful_tokens_per_s"],
                              raw_tokens_per_s=record["raw_tokens_per_s"],
                              padding_fraction=record["padding_fraction"])
            if "eval_loss" in logs:
                metrics.write({"kind": "eval", "step": state.global_step,
                               "epoch": round(state.epoch or 0.0, 4),
                               "eval_loss": logs["eval_loss"], "time": time.time(),
                               "mem_alloc_mb": mem_alloc, "mem_reserved_mb": mem_reserved})
                status.update(throttle=True, eval_loss=logs["eval_loss"])
            return control

        def on_save(self, args, state, control, **kwargs):
            status.update(checkpoint=f"checkpoint-{state.global_step}", step=state.global_step)
            return control

    return RunCallback()


def _make_trainer_class(recorder: Recorder):
    from transformers import Trainer

    class BaizeTrainer(Trainer):
        """Records the samples and tokens of each training micro-batch."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            ids = inputs.pop("sample_ids", None)
            if model.training and ids is not None:
                recorder.add(ids.tolist(), *batch_token_counts(inputs))
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

    return BaizeTrainer
