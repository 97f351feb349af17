"""Stopping and waiting for a fine-tuning run: requests through ``control.json`` (stop, save),
then signals to the trainer's process group if it does not stop in time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed
from baize_tui.train.runs.rundir import FINAL_STATES, Run, write_json_atomic

# -- stopping and waiting ----------------------------------------------------------------------


def request(run: Run, **fields: Any) -> None:
    """Write ``control.json`` (``stop``, ``save``, ``at_step``) for the trainer to pick up."""
    write_json_atomic(run.control_file, {**fields, "requested": time.time()})


def request_stop(directory: Path | str, *, save: bool = True, at_step: int | None = None) -> None:
    """Ask a run to leave at the next step (or after ``at_step``), checkpointing first unless
    ``save`` is false; returns at once (a UI polls :meth:`Run.status`)."""
    request(Run.open(directory), stop=True, save=save, at_step=at_step)


def request_save(directory: Path | str) -> None:
    """Ask a run for a checkpoint at the next step; it goes on training."""
    request(Run.open(directory), save=True)


def cancel_run(directory: Path | str) -> None:
    """SIGTERM to the run's process group: it leaves at the next step without saving (the
    last periodic checkpoint stays resumable). Returns at once; see :func:`stop_run` for the
    escalating, waiting version."""
    run = Run.open(directory)
    if run.alive():
        _kill_group(run, signal.SIGTERM)


def _wait_dead(run: Run, timeout: float, poll: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not run.alive():
            return True
        time.sleep(poll)
    return not run.alive()


def _kill_group(run: Run, sig: int) -> None:
    pgid = run.info().get("pgid") or run.info().get("pid")
    if not pgid:
        return
    try:
        os.killpg(int(pgid), sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_run(directory: Path | str, *, timeout: float = 600.0, grace: float = 15.0,
             kill: bool = False, at_step: int | None = None,
             on_escalate: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Stop a run and return its final status.

    Graceful (default): ask through ``control.json`` for a checkpoint at the next step (or at
    ``at_step``) and an exit; after ``timeout`` seconds, SIGTERM to the process group, and after
    ``grace`` more, SIGKILL. ``kill=True`` skips the request and starts with SIGTERM (the
    trainer then leaves at the next step without saving; the last periodic checkpoint stays).
    """
    run = Run.open(directory)
    if not run.alive():
        return run.status()
    if not kill:
        request(run, stop=True, save=True, at_step=at_step)
        if _wait_dead(run, timeout):
            return run.status()
        if on_escalate:
            on_escalate(f"no checkpoint after {timeout:g}s; sending SIGTERM")
    _kill_group(run, signal.SIGTERM)
    if not _wait_dead(run, grace):
        if on_escalate:
            on_escalate(f"still running {grace:g}s after SIGTERM; sending SIGKILL")
        _kill_group(run, signal.SIGKILL)
        _wait_dead(run, 10)
    status = run.raw_status()
    if status.get("state") not in FINAL_STATES:
        status.update(state="killed", message="stopped by signal; the last periodic checkpoint "
                      "(if any) can be resumed", updated=time.time())
        write_json_atomic(run.status_file, status)
    return run.status()


def wait_run(directory: Path | str, *, poll: float = 0.5,
             on_update: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None,
             timeout: float | None = None) -> dict[str, Any]:
    """Follow a run until it ends; ``on_update(status, new_metrics)`` after each poll."""
    run = Run.open(directory)
    tail = run.metrics_tail()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        status = run.status()
        records, _reset = tail.read_new()
        if on_update:
            on_update(status, records)
        if status.get("state") in FINAL_STATES:
            _wait_dead(run, 30.0, poll=0.05)  # the trainer is writing its last lines and exiting
            return status
        if deadline is not None and time.monotonic() > deadline:
            raise OperationFailed(f"{run.dir}: still {status.get('state')} after {timeout:g}s")
        time.sleep(poll)
