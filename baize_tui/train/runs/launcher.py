"""Starting and resuming a fine-tuning run: checks before launch, the run directory, and the
trainer process.

The trainer runs as ``python -m baize_tui.train.worker --run DIR`` (wrapped in ``accelerate
launch`` for several GPUs) in a new session, so signals to the terminal never reach it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed, UserError
from baize_tui.procs import track_child
from baize_tui.train.runs.rundir import (
    WORKER_MODULE,
    Run,
    read_json,
    register_run,
    write_json_atomic,
)
from baize_tui.train.settings import TrainConfig

# -- launching ----------------------------------------------------------------------------------


def visible_gpus() -> int:
    """CUDA GPUs this process may use, without importing torch (``nvidia-smi -L``)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    count = sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    if visible is not None:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_fingerprint(paths: list[str]) -> list[dict[str, Any]]:
    """Size and SHA-256 of each data file (resume refuses changed data: the order would move)."""
    out = []
    for name in paths:
        path = Path(name).expanduser()
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                for block in iter(partial(fh.read, 1 << 20), b""):
                    digest.update(block)
            size = path.stat().st_size
        except FileNotFoundError:
            raise UserError(f"{path}: no such data file") from None
        except OSError as exc:
            raise OperationFailed(f"{path}: cannot read ({exc.strerror or exc})") from None
        out.append({"path": str(path.absolute()), "size": size, "sha256": digest.hexdigest()})
    return out


def check_base(base: str) -> None:
    """A local base must be a LLaMA checkpoint directory (hub ids are checked by the trainer)."""
    path = Path(base).expanduser()
    if not path.exists():
        if base.count("/") == 1 and not base.startswith((".", "/", "~")):
            return  # a hub id; the trainer resolves and checks it
        raise UserError(f"{base}: no such base model directory")
    if not path.is_dir():
        raise UserError(f"{base}: the base model must be a checkpoint directory "
                        "(config.json + weights), not a file; GGUF files cannot be trained")
    config = read_json(path / "config.json")
    if config is None:
        raise UserError(f"{base}: no readable config.json; is this a Hugging Face checkpoint?")
    check_llama_config(config, base)
    from baize_tui.train.plan import preflight_convertible

    preflight_convertible(str(path))  # tokenizer and tensors too, before any training step


def check_llama_config(config: dict[str, Any], base: str) -> None:
    """Raise :class:`UserError` unless the model config is in the LLaMA family that
    baize-convert can turn into a GGUF (LLaMA 1/2/3, TinyLlama, SmolLM, Mistral 7B)."""
    from baize_convert.checkpoint import check_family

    model_type = str(config.get("model_type", "")).lower()
    archs = [str(a).lower() for a in config.get("architectures") or []]
    if model_type not in ("llama", "mistral") and not any("llama" in a or "mistral" in a
                                                          for a in archs):
        kind = model_type or (archs[0] if archs else "unknown")
        raise UserError(f"{base}: not a LLaMA model ({kind}); Baize fine-tuning and "
                        "baize-convert support LLaMA-family bases only (LLaMA 1/2/3, TinyLlama, "
                        "SmolLM, Mistral 7B)")
    check_family(config, Path(base) / "config.json")  # rope scaling, biases, exact names


def _resolve_gpus(config: TrainConfig) -> int:
    gpus = visible_gpus()
    if config.num_gpus > gpus:
        raise UserError(f"--num-gpus {config.num_gpus}: only {gpus} CUDA GPU(s) visible")
    if config.load_in and gpus == 0:
        raise UserError(f"--load-in {config.load_in} needs a CUDA GPU (bitsandbytes); none is "
                        "visible here; drop --load-in to train in full precision")
    if config.precision in ("bf16", "fp16") and gpus == 0:
        raise UserError(f"precision {config.precision} needs a CUDA GPU; use auto or fp32 on CPU")
    return config.num_gpus or gpus


def _launcher_argv(run: Run, n_gpus: int, precision: str, resume: bool) -> tuple[list[str], str]:
    worker = ["-m", WORKER_MODULE, "--run", str(run.dir)] + (["--resume"] if resume else [])
    if n_gpus <= 1:
        return [sys.executable, *worker], "python"
    # "auto" is decided by the trainer (bf16 where supported); its TrainingArguments override this.
    mixed = {"bf16": "bf16", "fp16": "fp16"}.get(precision, "no")
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_machines", "1", "--num_processes", str(n_gpus), "--mixed_precision", mixed,
            "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *worker], \
        "accelerate"


def _spawn(run: Run, config: TrainConfig, *, resume: bool) -> subprocess.Popen:
    n_gpus = _resolve_gpus(config)
    if n_gpus > 1:
        config.grad_accum(n_gpus)  # divisibility across ranks, before launching
    argv, launcher = _launcher_argv(run, n_gpus, config.precision, resume)
    env = dict(os.environ)
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONUNBUFFERED"] = "1"
    previous = run.info()
    write_json_atomic(run.status_file, {"state": "starting", "message": "launching the trainer",
                                        "updated": time.time()})
    run.control_file.unlink(missing_ok=True)
    try:
        log = open(run.log_file, "ab")
    except OSError as exc:
        raise OperationFailed(f"{run.log_file}: cannot write ({exc.strerror or exc})") from None
    with log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {'resume' if resume else 'start'}: "
                  f"{' '.join(argv)}\n".encode())
        log.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        except OSError as exc:
            raise OperationFailed(f"cannot start the trainer ({exc.strerror or exc})") from None
    track_child(proc)
    now = time.time()
    launches = list(previous.get("launches", []))
    launches.append({"pid": proc.pid, "started": now, "resume": resume})
    info = {
        "pid": proc.pid,
        "pgid": proc.pid,
        "argv": argv,
        "started": previous.get("started", now) if resume else now,
        "launched": now,
        "launcher": launcher,
        "num_gpus": n_gpus,
        "config_hash": config.config_hash(),
        "data": previous.get("data") if resume else data_fingerprint(config.data),
        "launches": launches,
    }
    write_json_atomic(run.run_file, info)
    return proc


def create_run(config: TrainConfig, out: Path | str, *, force: bool = False) -> Run:
    """Validate, then make the run directory with its ``config.toml`` (nothing is launched).

    The data files are read here, so format errors and empty datasets show up at once.
    """
    from baize_tui.train.data import load_dialogues

    config.validate()
    check_base(config.base)
    n_gpus = _resolve_gpus(config)  # CUDA-only options fail here, before anything is written
    if n_gpus > 1:
        config.grad_accum(n_gpus)
    config.data = [str(Path(p).expanduser().absolute()) for p in config.data]
    base_path = Path(config.base).expanduser()
    if base_path.exists():
        config.base = str(base_path.absolute())
    if config.init_adapter:
        from baize_tui.train.init_adapter import check_init_adapter_fits

        config.init_adapter = str(Path(config.init_adapter).expanduser().absolute())
        check_init_adapter_fits(config.init_adapter, config.base)
    load_dialogues(config.data)
    run = Run(Path(out))
    if run.dir.exists() and any(run.dir.iterdir()):
        if not run.config_file.exists() and not force:
            raise UserError(f"{run.dir}: exists and is not a training run; choose another --out")
        if run.config_file.exists():
            if run.alive():
                raise UserError(f"{run.dir}: a run is in progress there (pid {run.info().get('pid')});"
                                f" stop it first with `baize-tui train stop {run.dir}`")
            if not force:
                raise UserError(f"{run.dir}: a run exists there; `baize-tui train resume {run.dir}`"
                                " continues it, or pass --force to start over")
        for name in ("checkpoints", "adapter"):
            shutil.rmtree(run.dir / name, ignore_errors=True)
        for name in ("metrics.jsonl", "status.json", "run.json", "control.json", "train.log"):
            (run.dir / name).unlink(missing_ok=True)
    try:
        run.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run.config_file, config.to_toml())
    except OSError as exc:
        raise OperationFailed(f"{run.dir}: cannot write ({exc.strerror or exc})") from None
    register_run(run)
    return run


def start_run(config: TrainConfig, out: Path | str, *, force: bool = False) -> Run:
    """Create the run directory and launch the trainer; returns once the process exists."""
    run = create_run(config, out, force=force)
    _spawn(run, config, resume=False)
    return run


def truncate_metrics(run: Run, last_step: int) -> None:
    """Drop metrics of steps after ``last_step`` (they will be trained again), atomically."""
    if not run.metrics_file.exists():
        return
    kept = [r for r in run.metrics() if int(r.get("step", 0)) <= last_step]
    atomic_write_text(run.metrics_file, "".join(json.dumps(r) + "\n" for r in kept))


def resume_run(directory: Path | str, *, force: bool = False) -> Run:
    """Continue a stopped, cancelled, killed or crashed run from its last checkpoint.

    Same settings and data order; steps after the checkpoint are dropped from the metrics
    (they are trained again). A run without a checkpoint starts from step 0.
    """
    run = Run.open(directory)
    if run.alive():
        raise UserError(f"{run.dir}: the run is still going (pid {run.info().get('pid')})")
    status = run.status()
    if status.get("state") == "completed":
        raise UserError(f"{run.dir}: the run finished at step {status.get('step')}; its adapter "
                        f"is in {run.adapter_dir}")
    config = run.config()
    info = run.info()
    recorded = {d["path"]: d.get("sha256") for d in info.get("data") or []}
    if recorded and not force:
        now = {d["path"]: d["sha256"] for d in data_fingerprint(list(recorded))}
        changed = [p for p in recorded if recorded[p] != now.get(p)]
        if changed:
            raise UserError(f"{changed[0]}: changed since the run started, so the data order would "
                            "differ; restore it, or pass --force to resume anyway")
    ckpt = run.last_checkpoint()
    step = int(ckpt.name.split("-")[1]) if ckpt else 0
    truncate_metrics(run, step)
    if not ckpt:
        run.metrics_file.unlink(missing_ok=True)
    _spawn(run, config, resume=True)
    return run
