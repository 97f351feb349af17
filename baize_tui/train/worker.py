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

This module loads the model and runs the ``Trainer``; the reporting half (status and metrics
writers, ``control.json``, signals, the ``TrainerCallback``) is :mod:`baize_tui.train.reporting`,
whose names are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from baize_tui.errors import OperationFailed, UserError
from baize_tui.train.reporting import (  # noqa: F401 (re-exported: they used to live here)
    FLAGS,
    Cancelled,
    Flags,
    MetricsWriter,
    Recorder,
    StatusWriter,
    _broadcast,
    _make_trainer_class,
    _memory_mb,
    _on_signal,
    make_callback,
    read_control,
    throughput_fields,
)
from baize_tui.train.runs import EXIT_CODES, Run, check_llama_config
from baize_tui.train.settings import TrainConfig


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
