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

The trainer runs as ``python -m baize_tui.train.worker --run DIR`` (wrapped in ``accelerate
launch`` for several GPUs) in a new session, so signals to the terminal never reach it. The UI
side only reads files: :class:`Run` (status, metrics, log) and :class:`JsonlTail` /
:class:`TextTail` (incremental reads by byte offset).

:mod:`.rundir` (the directory, its files, the index of runs), :mod:`.launcher` (checks, start,
resume) and :mod:`.supervision` (stop, save, cancel, wait). Every public name is importable
from ``baize_tui.train.runs``.
"""

from __future__ import annotations

from baize_tui.train.runs.launcher import (  # noqa: F401 (imported by tests and other modules)
    _launcher_argv,
    check_base,
    check_llama_config,
    create_run,
    data_fingerprint,
    resume_run,
    start_run,
    truncate_metrics,
    visible_gpus,
)
from baize_tui.train.runs.rundir import (
    ACTIVE_STATES,
    EXIT_CODES,
    FINAL_STATES,
    WORKER_MODULE,
    JsonlTail,
    Run,
    TextTail,
    list_runs,
    read_json,
    register_run,
    write_json_atomic,
)
from baize_tui.train.runs.supervision import (
    cancel_run,
    request,
    request_save,
    request_stop,
    stop_run,
    wait_run,
)

__all__ = [
    "WORKER_MODULE",
    "ACTIVE_STATES",
    "FINAL_STATES",
    "EXIT_CODES",
    "write_json_atomic",
    "read_json",
    "JsonlTail",
    "TextTail",
    "Run",
    "register_run",
    "list_runs",
    "visible_gpus",
    "data_fingerprint",
    "check_base",
    "check_llama_config",
    "create_run",
    "start_run",
    "truncate_metrics",
    "resume_run",
    "request",
    "request_stop",
    "request_save",
    "cancel_run",
    "stop_run",
    "wait_run",
]
