"""The trainer process: ``python -m baize_tui.train.worker --run DIR [--resume]``.

Launched by :mod:`baize_tui.train.runs` in its own session (one process per GPU under
``accelerate launch``). It reads ``DIR/config.toml``, trains a peft LoRA with the transformers
``Trainer``, and reports through files only: ``status.json`` (atomic), ``metrics.jsonl`` (one
flushed line per logged step), checkpoints under ``DIR/checkpoints``, and the final adapter in
``DIR/adapter``. Only rank 0 writes; a stop decision is taken on rank 0 and broadcast, so every
rank leaves at the same step.

Stopping: ``control.json`` ``{"stop": true, "save": true}`` checkpoints at the next step boundary
and exits (``train stop``); ``{"save": true}`` checkpoints and goes on. SIGTERM/SIGINT leave at the
next step without saving (a second one, or one before training started, exits at once).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.train.packing import batch_token_counts
from baize_tui.train.runs import EXIT_CODES, Run, check_llama_config, read_json, write_json_atomic
from baize_tui.train.settings import TrainConfig


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


def _precision(config: TrainConfig) -> str:
    import torch

    cuda = torch.cuda.is_available()
    if config.precision == "auto":
        if not cuda:
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if config.precision in ("bf16", "fp16") and not cuda:
        raise UserError(f"precision {config.precision} needs a CUDA GPU; use auto or fp32 on CPU")
    return config.precision


def load_model(config: TrainConfig, precision: str, local_rank: int, world: int,
               attn_implementation: str | None = None):
    """The base model (quantized with bitsandbytes when asked) wrapped in a fresh LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_config = AutoConfig.from_pretrained(config.base)
    check_llama_config(hf_config.to_dict(), config.base)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if config.load_in:
        if not torch.cuda.is_available():
            raise UserError(f"--load-in {config.load_in} needs a CUDA GPU (bitsandbytes); none "
                            "is available; drop --load-in to train in full precision")
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise UserError(f"--load-in {config.load_in} needs bitsandbytes: pip install "
                            "'baize-tui[cuda]'") from None
        from transformers import BitsAndBytesConfig

        if config.load_in == "8bit":
            quant = BitsAndBytesConfig(load_in_8bit=True)
        else:
            quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                       bnb_4bit_use_double_quant=True,
                                       bnb_4bit_compute_dtype=dtype if dtype != torch.float32
                                       else torch.float16)
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": local_rank if world > 1 else 0}
    model = AutoModelForCausalLM.from_pretrained(config.base, **kwargs)
    model.config.use_cache = False
    if config.init_adapter:
        from baize_tui.train.init_adapter import merge_init_adapter

        changed = merge_init_adapter(model, config.init_adapter, quantized=bool(config.load_in))
        print(f"init adapter: merged {changed} tensors of {config.init_adapter} into the base "
              "weights (frozen); training a new LoRA on top", flush=True)
    if config.load_in:
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    from baize_tui.train.plan import target_modules_for

    targets = target_modules_for(config.target_modules, hf_config.to_dict())
    print(f"LoRA target modules: {targets}", flush=True)
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=targets,
                      bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def _oom_message(config: TrainConfig, where: str) -> str:
    lower = []
    if config.micro_batch_size > 1:
        lower.append(f"--micro-batch-size (now {config.micro_batch_size}; gradient accumulation "
                     f"keeps the global batch at {config.batch_size})")
    lower.append(f"--cutoff-len (now {config.cutoff_len})")
    if not config.gradient_checkpointing:
        lower.append("turn gradient checkpointing on")
    if not config.load_in:
        lower.append("--load-in 4bit (QLoRA)")
    return f"out of {where} memory: lower " + ", or ".join(lower)


def _is_oom(exc: BaseException) -> tuple[bool, str]:
    name = type(exc).__name__
    text = str(exc)
    if name == "OutOfMemoryError" or "CUDA out of memory" in text:
        return True, "GPU"
    if isinstance(exc, (MemoryError,)) or "can't allocate memory" in text \
            or "DefaultCPUAllocator" in text:
        return True, "CPU"
    return False, ""


def train(run: Run, *, resume: bool, status: StatusWriter, rank: int, local_rank: int,
          world: int) -> int:
    """Load, train, save; returns the exit status. Errors propagate to :func:`main`."""
    is_main = rank == 0
    config = run.config()
    config.validate()
    ga = config.grad_accum(world)
    print(f"baize-tui trainer: run {run.dir}, rank {rank}/{world}, config {config.config_hash()}",
          flush=True)

    from baize_tui.train.plan import clamp_warmup, preflight_convertible, total_steps

    status.update("checking_base", message="checking that the base converts to a GGUF")
    print(f"base: {preflight_convertible(config.base)}", flush=True)
    status.update("loading_dataset", message="reading and tokenizing the data")
    from baize_tui.train.data import (
        Collator,
        check_dropped,
        encode_all,
        load_dialogues,
        load_tokenizer,
        split_dialogues,
    )

    loaded = load_dialogues(config.data)
    train_dialogues, val_dialogues = split_dialogues(loaded.dialogues, config.val_size, config.seed)
    tokenizer = load_tokenizer(config.base)
    from baize_tui.train.base_template import resolve_template

    template = resolve_template(config.template, tokenizer, config.base)  # "base": its own
    train_examples, train_stats = encode_all(tokenizer, train_dialogues, template=template,
                                             cutoff_len=config.cutoff_len, loss=config.loss)
    check_dropped(train_stats, cutoff_len=config.cutoff_len)
    val_examples, val_stats = encode_all(tokenizer, val_dialogues, template=template,
                                         cutoff_len=config.cutoff_len, loss=config.loss)
    data_info = {"dialogues": len(loaded.dialogues), "skipped_records": sum(loaded.dropped.values()),
                 "train": train_stats.as_dict(), "val": val_stats.as_dict(),
                 "per_file": loaded.per_file}
    print(f"data: {json.dumps(data_info)}", flush=True)
    if loaded.dropped:
        print(f"skipped records: {dict(loaded.dropped)} e.g. {loaded.examples_of_drops}", flush=True)

    status.update("loading_model", message=f"loading {config.base}", data=data_info)
    import torch
    from transformers import TrainingArguments, set_seed

    from baize_tui.train.packing import (
        PackingCollator,
        check_isolation,
        check_kernels,
        choose_attention,
        probe_tokens,
        require_boundaries,
        sampling_args,
    )

    precision = _precision(config)
    check_kernels(config.kernels)
    attention = choose_attention(packing=config.packing, precision=precision)
    set_seed(config.seed)  # the LoRA A matrices are random: same seed, same run
    model = load_model(config, precision, local_rank, world, attention)
    if is_main:
        trainable, total = model.get_nb_trainable_parameters()
        print(f"model: {total:,} parameters, {trainable:,} trainable (LoRA r={config.lora_r}), "
              f"precision {precision}, gradient accumulation {ga}", flush=True)

    cuda = torch.cuda.is_available()
    warmup, notice = clamp_warmup(config.warmup_steps, total_steps(
        config.max_steps, config.num_epochs, len(train_examples), config.micro_batch_size,
        world, ga))
    if notice:
        print(f"notice: {notice}", flush=True)
    args_kwargs: dict[str, Any] = dict(
        output_dir=str(run.checkpoints_dir),
        per_device_train_batch_size=config.micro_batch_size,
        per_device_eval_batch_size=config.micro_batch_size,
        gradient_accumulation_steps=ga,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=warmup,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        eval_strategy="steps" if val_examples else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        save_only_model=False,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not cuda,
        activation_checkpointing=config.gradient_checkpointing and not config.load_in,
        activation_checkpointing_kwargs={"use_reentrant": False},
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False if world > 1 else None,
    )
    if config.optim:
        args_kwargs["optim"] = config.optim
    args_kwargs.update(sampling_args(config, TrainingArguments))
    args = TrainingArguments(**args_kwargs)

    recorder = Recorder()
    metrics = MetricsWriter(run, is_main)
    base_tokens = 0
    if resume:
        earlier = [r for r in run.metrics() if r.get("kind") == "train"]
        base_tokens = int(earlier[-1].get("tokens_seen", 0)) if earlier else 0
    callback = make_callback(run, status, metrics, recorder, is_main=is_main,
                             base_tokens=base_tokens)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (
        tokenizer.unk_token_id or 0)
    collator = PackingCollator() if config.packing else Collator(pad_id, 8 if cuda else None)
    trainer = _make_trainer_class(recorder)(
        model=model, args=args, data_collator=collator,
        train_dataset=train_examples, eval_dataset=val_examples or None, callbacks=[callback])

    if config.packing:  # on the training device, where the Trainer has put the model
        impl = require_boundaries(model)
        check_isolation(trainer.model, probe_tokens(train_examples), half=precision != "fp32")
        print(f"packing: padding-free micro-batches, attention {impl} (isolation checked)",
              flush=True)
    checkpoint = run.last_checkpoint() if resume else None
    if resume and checkpoint is None:
        print("no checkpoint yet: starting from step 0", flush=True)
    status.update("training", message="starting", checkpoint=checkpoint.name if checkpoint else None)
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        state = trainer.state
        if callback.stop_reason:
            if is_main:
                ckpt = run.last_checkpoint()
                where = f"; resume from {ckpt.name}" if ckpt else ""
                status.update(callback.stop_reason, message=f"{callback.stop_reason} at step "
                              f"{state.global_step}{where}", step=state.global_step,
                              checkpoint=ckpt.name if ckpt else None, eta_s=None)
            return EXIT_CODES[callback.stop_reason]
        # The Trainer evaluates at the last step itself (transformers >= 4.5x); only an
        # older one that did not gets a final evaluation here, so it runs exactly once.
        evaluated = any("eval_loss" in h and h.get("step") == state.global_step
                        for h in state.log_history)
        if val_examples and not evaluated:
            status.update("evaluating", message="final evaluation")
            trainer.evaluate()
        status.update("saving", message="saving the adapter")
        trainer.accelerator.wait_for_everyone()
        if is_main:
            save_adapter(trainer.model, run, config.base, template=config.template)
            status.update("completed", message=f"finished at step {state.global_step}; adapter in "
                          f"{run.adapter_dir}", step=state.global_step, progress=1.0, eta_s=0,
                          adapter=str(run.adapter_dir))
        return 0
    finally:
        FLAGS.in_training = False
        metrics.close()


def save_adapter(model: Any, run: Run, base: str, template: str | None = None) -> None:
    """``adapter_model.safetensors`` + ``adapter_config.json`` (base recorded) into ``adapter/``,
    with ``baize_train.json`` recording the chat format it was trained in (merge embeds it)."""
    import shutil

    tmp = run.dir / ".adapter.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    config_path = tmp / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not config.get("base_model_name_or_path"):
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    if template:
        (tmp / "baize_train.json").write_text(json.dumps({"template": template}), encoding="utf-8")
    weights = tmp / "adapter_model.safetensors"
    if not weights.exists() or weights.stat().st_size < 1024:
        raise OperationFailed(f"{weights}: the saved adapter is empty; not replacing {run.adapter_dir}")
    if run.adapter_dir.exists():
        shutil.rmtree(run.adapter_dir)
    tmp.rename(run.adapter_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m baize_tui.train.worker",
                                     description="Run one baize-tui fine-tuning run (normally "
                                                 "started by `baize-tui train run`).")
    parser.add_argument("--run", required=True, metavar="DIR", help="the run directory")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args(argv)
    run = Run(Path(args.run))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    status = StatusWriter(run, rank == 0)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    config: TrainConfig | None = None
    try:
        config = run.config()
        return train(run, resume=args.resume, status=status, rank=rank, local_rank=local_rank,
                     world=world)
    except Cancelled as exc:
        status.update("cancelled", message=f"cancelled by {exc}", eta_s=None)
        return EXIT_CODES["cancelled"]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status.update("error", message=str(exc), eta_s=None)
        return exc.exit_code if exc.exit_code else 1
    except BaseException as exc:  # noqa: BLE001 - every failure must reach status.json
        traceback.print_exc()
        oom, where = _is_oom(exc)
        if oom and config is not None:
            message = _oom_message(config, where)
        else:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            message = f"{type(exc).__name__}: {first} (traceback in {run.log_file})"
        print(f"error: {message}", file=sys.stderr, flush=True)
        status.update("error", message=message, eta_s=None)
        return 1


if __name__ == "__main__":  # pragma: no cover - exercised through subprocesses
    sys.exit(main())
