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
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baize_tui.config import atomic_write_text
from baize_tui.errors import OperationFailed, UserError
from baize_tui.paths import get_paths
from baize_tui.train.settings import TrainConfig

WORKER_MODULE = "baize_tui.train.worker"
ACTIVE_STATES = ("starting", "checking_base", "loading_dataset", "loading_model", "training", "evaluating",
                 "saving", "stopping")
FINAL_STATES = ("completed", "stopped", "cancelled", "error", "killed", "dead")
# Exit status of ``train run --wait`` (and of the worker) per final state.
EXIT_CODES = {"completed": 0, "stopped": 130, "cancelled": 130, "error": 1, "killed": 1, "dead": 1}

_children: list[subprocess.Popen] = []  # reaped on every liveness check (no zombies)


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


def process_alive(pid: int | None, needle: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``needle`` (pids get reused)."""
    for child in list(_children):
        if child.poll() is not None:
            _children.remove(child)
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    cmdline_file = Path(f"/proc/{pid}/cmdline")
    if cmdline_file.parent.exists():
        try:
            cmdline = cmdline_file.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
    else:  # pragma: no cover - macOS and other systems without /proc
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                             text=True)
        cmdline = out.stdout
    return needle in cmdline


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
        return process_alive(info.get("pid"), str(self.dir))

    def raw_status(self) -> dict[str, Any]:
        """``status.json`` as written."""
        return read_json(self.status_file) or {}

    def status(self) -> dict[str, Any]:
        """``status.json``, corrected when the process died without saying so (state ``dead``)."""
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
                status.update(state="dead", message=f"the trainer stopped without a word "
                              f"(killed or crashed) while {state}{hint}")
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
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
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
    _children.append(proc)
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
