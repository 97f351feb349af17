"""A background SDF pipeline (``baize-tui sdf run``) that outlives the app that started it.

The TUI starts ``sdf sample`` + ``sdf judge`` as one detached process (its own session, output
to ``DIR/sdf.log``, pid in ``DIR/pipeline.json``) and only reads the run directory's files, so
closing the app never stops a run, and reopening it re-attaches. Pause and resume are
SIGSTOP/SIGCONT to the process group; stop is SIGTERM, which the command turns into "finish
the work in flight, save, exit" (a re-run resumes). The API key travels in the environment,
never on the command line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed

PIPELINE = "pipeline.json"
LOG = "sdf.log"


def pipeline_argv(out: Path, *, prompts: str, model: str, judge: str, n: int = 4,
                  model_url: str | None = None, judge_url: str | None = None,
                  concurrency: int = 4, judge_concurrency: int = 8, max_tokens: int = 512,
                  seed: int = 0) -> list[str]:
    """The ``baize-tui sdf run`` command line (no secrets)."""
    argv = [sys.executable, "-m", "baize_tui.cli", "sdf", "run", "--prompts", prompts,
            "--model", model, "--n", str(n), "--out", str(Path(out).expanduser().absolute()),
            "--concurrency", str(concurrency),
            "--max-tokens", str(max_tokens), "--judge", judge, "--judge-concurrency",
            str(judge_concurrency), "--seed", str(seed), "--no-progress"]
    if model_url:
        argv += ["--base-url", model_url]
    if judge_url:
        argv += ["--judge-base-url", judge_url]
    return argv


def start(out: Path, argv: list[str], *, env: dict[str, str] | None = None) -> int:
    """Launch ``argv`` detached, logging to ``out/sdf.log``; returns the pid."""
    out.mkdir(parents=True, exist_ok=True)
    if alive(out):
        raise OperationFailed(f"{out}: an SDF run is already going (pid {info(out).get('pid')})")
    with (out / LOG).open("ab") as log:
        log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} start\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=env if env is not None else dict(os.environ))
    atomic_write_text(out / PIPELINE, json.dumps({"pid": proc.pid, "argv": argv,
                                                  "started": time.time()}) + "\n")
    return proc.pid


def info(out: Path) -> dict[str, Any]:
    """``pipeline.json`` (empty when there is none)."""
    try:
        return json.loads((out / PIPELINE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _state(pid: int) -> str | None:
    """The process state letter from /proc (``None`` when gone or not ours to read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def alive(out: Path) -> bool:
    """Whether the recorded pipeline process still runs (and is really ours: pids get reused)."""
    pid = info(out).get("pid")
    if not isinstance(pid, int):
        return False
    state = _state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"baize_tui.cli" in cmdline and str(Path(out).expanduser().absolute()).encode() in cmdline


def paused(out: Path) -> bool:
    """Whether the pipeline is stopped by :func:`pause`."""
    pid = info(out).get("pid")
    return isinstance(pid, int) and alive(out) and _state(pid) == "T"


def _signal(out: Path, sig: int) -> bool:
    if not alive(out):
        return False
    try:
        os.killpg(int(info(out)["pid"]), sig)
    except ProcessLookupError:
        return False
    return True


def pause(out: Path) -> bool:
    """Freeze the pipeline (requests in flight may time out and are retried on resume)."""
    return _signal(out, signal.SIGSTOP)


def resume(out: Path) -> bool:
    """Undo :func:`pause`."""
    return _signal(out, signal.SIGCONT)


def stop(out: Path) -> bool:
    """Ask the pipeline to finish the work in flight and exit (resumable)."""
    ok = _signal(out, signal.SIGTERM)
    if ok:
        _signal(out, signal.SIGCONT)  # a paused process must run to handle SIGTERM
    return ok
