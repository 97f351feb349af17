"""``baize-tui train``: LoRA fine-tuning runs (launch, watch, stop, resume, list, preview).

The trainer runs in its own process and session; these commands only start it and read or
write files in its run directory (see ``baize_tui.train.runs``), so they return at once and a
closed terminal never stops a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from baize_tui.commands.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from baize_tui.errors import UserError
from baize_tui.formatting import fmt_eta
from baize_tui.termtext import echo, term_safe

# Flag -> TrainConfig field, for flags that map one to one.
_FLAG_FIELDS = {
    "max_steps": "max_steps", "batch_size": "batch_size", "micro_batch_size": "micro_batch_size",
    "cutoff_len": "cutoff_len", "lr": "learning_rate", "loss": "loss", "epochs": "num_epochs",
    "warmup_steps": "warmup_steps", "val_size": "val_size", "seed": "seed", "lora_r": "lora_r",
    "lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout",
    "target_modules": "target_modules", "scheduler": "lr_scheduler", "load_in": "load_in",
    "precision": "precision", "num_gpus": "num_gpus", "eval_steps": "eval_steps",
    "save_steps": "save_steps", "save_total_limit": "save_total_limit", "template": "template",
    "init_adapter": "init_adapter",
    "packing": "packing", "group_by_length": "group_by_length", "kernels": "kernels",
}


def _add_data_options(p: argparse.ArgumentParser, *, required_base: bool = False) -> None:
    p.add_argument("--base", metavar="BASE", required=required_base,
                   help="base model: a LLaMA checkpoint directory in Hugging Face format")
    p.add_argument("--data", nargs="+", action="extend", metavar="FILE",
                   help="training data: Baize JSON ({topic, input} arrays), self-chat exports, "
                        "chat-messages JSONL; several files are mixed")
    p.add_argument("--config", metavar="TOML", help="settings file (keys as in config.toml)")
    p.add_argument("--preset", metavar="NAME",
                   help="starting settings: baize (default), baize-exact, baize-7b-a100, "
                        "baize-13b-a100, a100-bf16, qlora-4bit")
    p.add_argument("--cutoff-len", type=positive_int, metavar="N",
                   help="tokens per example (default 512)")
    p.add_argument("--loss", choices=("ai", "all"),
                   help="ai: train the AI turns and their closing [|Human|] (default); "
                        "all: the whole text (Baize v1)")
    p.add_argument("--template", choices=("chat", "release", "base"),
                   help="chat: the prompt format baize-tui chats with (default); release: the "
                        "released data's spaced format; base: the base model's own chat "
                        "template (merge then embeds it)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train run|status|stop|resume|list|preview``."""
    p = subparsers.add_parser(
        "train", help="fine-tune LLaMA with LoRA on Baize-style dialogues",
        description="LoRA fine-tuning runs with Baize's settings. Runs go on in the background "
                    "(a closed terminal does not stop them) and write everything to their "
                    "directory: status.json, metrics.jsonl, train.log, checkpoints, adapter/.")
    sub = p.add_subparsers(dest="train_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    r = sub.add_parser("run", help="start a run in the background",
                       description="Validate the settings and data, start the trainer in its own "
                                   "process and return (use --wait to follow it).")
    _add_data_options(r)
    r.add_argument("--out", required=True, metavar="DIR", help="run directory")
    h = r.add_argument_group("hyperparameters (defaults: Baize v1)")
    h.add_argument("--max-steps", type=positive_int, metavar="N",
                   help="stop after N optimizer steps (default: whole epochs)")
    h.add_argument("--epochs", type=positive_float, metavar="X", help="epochs (default 1)")
    h.add_argument("--batch-size", type=positive_int, metavar="N",
                   help="global batch (default 64; reached by gradient accumulation)")
    h.add_argument("--micro-batch-size", type=positive_int, metavar="N",
                   help="examples per forward pass per GPU (default 8)")
    h.add_argument("--lr", type=positive_float, metavar="X", help="learning rate (default 2e-4)")
    h.add_argument("--scheduler", choices=("linear", "cosine", "constant_with_warmup"),
                   help="learning-rate schedule (default linear)")
    h.add_argument("--warmup-steps", type=non_negative_float, metavar="N",
                   help="warmup steps, or a fraction of all steps when below 1 (default 100)")
    h.add_argument("--val-size", type=non_negative_float, metavar="N",
                   help="held-out dialogues, or a fraction when below 1 "
                        "(default min(2000, 5%%); 0: no evaluation)")
    h.add_argument("--seed", type=int, metavar="N", help="data order and init seed (default 42)")
    h.add_argument("--lora-r", type=positive_int, metavar="N", help="LoRA rank (default 8)")
    h.add_argument("--lora-alpha", type=positive_int, metavar="N", help="LoRA alpha (default 16)")
    h.add_argument("--lora-dropout", type=non_negative_float, metavar="X",
                   help="LoRA dropout (default 0.05)")
    h.add_argument("--init-adapter", metavar="SFT_ADAPTER",
                   help="start from this frozen LoRA (e.g. the SFT adapter, Baize v2's SDF step): "
                        "merged into the base weights in memory, then a new LoRA is trained")
    h.add_argument("--target-modules", metavar="LIST",
                   help="auto (default: Baize's q,k,v,down,gate,up_proj on LLaMA-1, every "
                        "projection on newer bases), all-linear, or comma-separated names")
    hw = r.add_argument_group("hardware")
    hw.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"),
                    help="auto: bf16 where supported, else fp16 on GPU, fp32 on CPU")
    hw.add_argument("--load-in", choices=("8bit", "4bit"),
                    help="quantize the base with bitsandbytes (CUDA only; 4bit = QLoRA)")
    hw.add_argument("--no-gradient-checkpointing", action="store_true",
                    help="faster, but needs more memory")
    hw.add_argument("--num-gpus", type=non_negative_int, metavar="N",
                    help="GPUs to use (default: all visible; >1 goes through accelerate launch)")
    tp = r.add_argument_group("throughput")
    tp.add_argument("--packing", action=argparse.BooleanOptionalAction, default=None,
                    help="padding-free batches: each micro-batch is one row, attention kept "
                         "inside each sample (FlashAttention varlen on CUDA with flash-attn, "
                         "per-sample SDPA elsewhere); same batches, no compute on padding")
    tp.add_argument("--group-by-length", action=argparse.BooleanOptionalAction, default=None,
                    help="unpacked batches of similar lengths (less padding; changes the order)")
    tp.add_argument("--kernels", choices=("liger",), default=None,
                    help="fused Liger kernels (optional: pip install 'baize-tui[kernels]', CUDA)")
    ck = r.add_argument_group("checkpoints")
    ck.add_argument("--eval-steps", type=positive_int, metavar="N", help="evaluate every N steps (200)")
    ck.add_argument("--save-steps", type=positive_int, metavar="N",
                    help="checkpoint every N steps (200)")
    ck.add_argument("--save-total-limit", type=positive_int, metavar="N",
                    help="checkpoints kept (3)")
    r.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    r.add_argument("--wait", action="store_true",
                   help="follow the run with a progress bar and exit with its status")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="summarize a run")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_status)

    st = sub.add_parser("stop", help="checkpoint and stop a run (resumable)",
                        description="Ask the trainer to save a checkpoint at the next step and "
                                    "exit; after --timeout, SIGTERM and then SIGKILL its process "
                                    "group.")
    st.add_argument("dir", metavar="DIR")
    st.add_argument("--timeout", type=positive_float, default=600.0, metavar="S",
                    help="seconds to wait for the checkpoint before killing (default 600)")
    st.add_argument("--at-step", type=positive_int, metavar="N",
                    help="stop after step N instead of the next one")
    st.add_argument("--kill", action="store_true",
                    help="do not wait for a checkpoint: SIGTERM now (SIGKILL 15 s later)")
    st.set_defaults(func=cmd_stop)

    rs = sub.add_parser("resume", help="continue a stopped or crashed run from its last checkpoint")
    rs.add_argument("dir", metavar="DIR")
    rs.add_argument("--force", action="store_true", help="resume even though the data files changed")
    rs.add_argument("--wait", action="store_true", help="follow the run to its end")
    rs.set_defaults(func=cmd_resume)

    ls = sub.add_parser("list", help="list runs")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=cmd_list)

    pv = sub.add_parser("preview", help="show what a sample trains on (trained tokens highlighted)",
                        description="Render dialogues exactly as training sees them, with the "
                                    "tokens that count towards the loss highlighted.")
    _add_data_options(pv)
    pv.add_argument("--tokenizer", metavar="DIR", help="tokenizer to use (default: --base)")
    pv.add_argument("--index", type=int, default=0, metavar="N",
                    help="which dialogue (0-based, across the files in order; default 0)")
    pv.add_argument("--count", type=positive_int, default=1, metavar="N",
                    help="how many dialogues from --index (default 1)")
    pv.add_argument("--plain", action="store_true",
                    help="mark trained text with ⟦ ⟧ instead of colours")
    pv.set_defaults(func=cmd_preview)


# -- helpers -------------------------------------------------------------------------------------


def resolve_config(args: argparse.Namespace) -> Any:
    """Preset, then ``--config``, then flags: the run's settings."""
    from baize_tui.safe_write import ensure_regular_input
    from baize_tui.train.settings import TrainConfig, preset, read_toml_settings

    for path in [*(getattr(args, "data", None) or []), getattr(args, "config", None)]:
        if path:  # a FIFO or a device would hang the read (or never end)
            ensure_regular_input(path, "input file", "give a regular .json/.jsonl/.toml file")
    config = preset(args.preset) if getattr(args, "preset", None) else TrainConfig()
    if getattr(args, "config", None):
        config.update(read_toml_settings(args.config), source=args.config)
    updates: dict[str, Any] = {}
    if getattr(args, "base", None):
        updates["base"] = args.base
    if getattr(args, "data", None):
        updates["data"] = list(args.data)
    for flag, name in _FLAG_FIELDS.items():
        value = getattr(args, flag, None)
        if value is not None:
            updates[name] = value
    if getattr(args, "no_gradient_checkpointing", False):
        updates["gradient_checkpointing"] = False
    config.update(updates, source="command line")
    return config




def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def throughput_text(record: dict[str, Any]) -> str:
    """``useful N tokens/s, raw M tokens/s, padding P%`` from a metrics record or summary."""
    pad = record.get("padding_fraction")
    return (f"useful {_fmt(record.get('useful_tokens_per_s'), '.0f')} tokens/s, raw "
            f"{_fmt(record.get('raw_tokens_per_s'), '.0f')} tokens/s, padding "
            f"{'-' if pad is None else format(100 * pad, '.1f') + '%'}")


def follow(directory: str) -> int:
    """Show a progress bar until the run ends; returns its exit status."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from baize_tui.train.runs import EXIT_CODES, Run, wait_run

    err = Console(stderr=True, highlight=False)
    progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.description}"), console=err, transient=False,
                        refresh_per_second=4)
    task = progress.add_task("starting", total=None)
    last: dict[str, Any] = {}

    def on_update(status: dict[str, Any], records: list[dict[str, Any]]) -> None:
        for rec in records:
            if rec.get("kind") == "train":
                last.update(loss=rec.get("loss"), tps=rec.get("tokens_per_s"))
            elif rec.get("kind") == "eval":
                last["eval"] = rec.get("eval_loss")
        total = status.get("max_steps")
        desc = (f"{status.get('state')} | loss {_fmt(last.get('loss'))} | eval "
                f"{_fmt(last.get('eval'))} | {_fmt(last.get('tps'), '.0f')} tok/s | eta "
                f"{fmt_eta(status.get('eta_s'))}")
        progress.update(task, total=total, completed=status.get("step") or 0, description=desc)

    try:
        with progress:
            status = wait_run(directory, poll=0.5, on_update=on_update)
    except KeyboardInterrupt:
        echo(f"no longer following; the run goes on. Stop it with: baize-tui train stop "
             f"{Run(Path(directory)).dir}", file=sys.stderr)
        return 130
    state = status.get("state", "?")
    echo(f"{state}: {status.get('message', '')}")
    return EXIT_CODES.get(state, 1)


# -- commands ------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """Start a run."""
    from baize_tui.train.packing import require_kernel_package
    from baize_tui.train.runs import start_run

    config = resolve_config(args)
    require_kernel_package(config.kernels)
    run = start_run(config, args.out, force=args.force)
    info = run.info()
    via = f" via accelerate on {info.get('num_gpus')} GPUs" if info.get("launcher") == "accelerate" else ""
    echo(f"started {run.dir} (pid {info.get('pid')}{via}); log: {run.log_file}")
    if args.wait:
        return follow(str(run.dir))
    echo(f"follow it with: baize-tui train status {run.dir}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print a run's summary."""
    from baize_tui.train.runs import Run

    info = Run.open(args.dir).summary()
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    step = f"{info['step']}/{info['max_steps']}" if info["max_steps"] else str(info["step"])
    lines = [
        f"run        {info['dir']}",
        f"state      {info['state']}" + (f" - {info['message']}" if info["message"] else ""),
        f"base       {info['base']}",
        f"data       {', '.join(info['data'])}",
        f"step       {step} (epoch {_fmt(info['epoch'], '.2f')})",
        f"loss       {_fmt(info['loss'])} (eval {_fmt(info['eval_loss'])})",
        f"lr         {_fmt(info['lr'], '.2e')}",
        f"speed      {_fmt(info['tokens_per_s'], '.0f')} tokens/s"
        + (f", {info['mem_reserved_mb']:.0f} MiB GPU reserved" if info["mem_reserved_mb"] else ""),
        f"throughput {throughput_text(info)}",
        f"eta        {fmt_eta(info['eta_s'])}",
        f"checkpoint {info['checkpoint'] or '-'}",
        f"adapter    {info['adapter'] or '-'}",
    ]
    echo("\n".join(lines))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    """Stop a run gracefully (or not)."""
    from baize_tui.train.runs import Run, stop_run

    run = Run.open(args.dir)
    if not run.alive():
        status = run.status()
        echo(f"not running ({status.get('state')}): {status.get('message', '')}")
        return 0
    if not args.kill:
        where = f"after step {args.at_step}" if args.at_step else "at the next step"
        print(f"asking {run.dir} to checkpoint {where} and exit (up to {args.timeout:g}s)...",
              file=sys.stderr)
    status = stop_run(args.dir, timeout=args.timeout, kill=args.kill, at_step=args.at_step,
                      on_escalate=lambda msg: print(msg, file=sys.stderr))
    echo(f"{status.get('state')}: {status.get('message', '')}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """Resume a run."""
    from baize_tui.train.runs import resume_run

    run = resume_run(args.dir, force=args.force)
    ckpt = run.last_checkpoint()
    echo(f"resumed {run.dir} from {ckpt.name if ckpt else 'the start (no checkpoint yet)'} "
         f"(pid {run.info().get('pid')})")
    if args.wait:
        return follow(str(run.dir))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """List known runs."""
    from baize_tui.train.runs import list_runs

    summaries = [run.summary() for run in list_runs()]
    if args.json:
        print(json.dumps(summaries, indent=2, ensure_ascii=False))
        return 0
    if not summaries:
        print("no runs yet; start one with: baize-tui train run --base BASE --data FILE --out DIR")
        return 0
    for s in summaries:
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(s["started"])) if s["started"] else "-"
        step = f"{s['step']}/{s['max_steps']}" if s["max_steps"] else str(s["step"])
        echo(f"{s['state']:<11} {step:>11}  loss {_fmt(s['loss']):>7}  {started}  {s['dir']}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    """Print rendered samples with the trained tokens highlighted."""
    from rich.console import Console
    from rich.text import Text

    from baize_tui.train.data import load_dialogues, load_tokenizer, preview_dialogue

    config = resolve_config(args)
    if not config.data:
        raise UserError("no data: give --data FILE")
    source = args.tokenizer or config.base
    if not source:
        raise UserError("give --base (or --tokenizer) so the text can be tokenized as in training")
    loaded = load_dialogues(config.data)
    dialogues = loaded.dialogues
    if not -len(dialogues) <= args.index < len(dialogues):
        raise UserError(f"--index {args.index}: there are {len(dialogues)} dialogues")
    tokenizer = load_tokenizer(source)
    from baize_tui.train.base_template import resolve_template

    template = resolve_template(config.template, tokenizer, source)
    console = Console(highlight=False, soft_wrap=True)
    plain = args.plain or not console.is_terminal
    start = args.index % len(dialogues)
    for dialogue in dialogues[start:start + args.count]:
        pv = preview_dialogue(tokenizer, dialogue, template=template,
                              cutoff_len=config.cutoff_len, loss=config.loss)
        enc = pv.encoded
        cut = (f", cut to {enc.kept_turns} of {enc.n_turns} turns" if enc.kept_turns < enc.n_turns
               else "") + (", cut mid-turn at the cutoff" if enc.hard_cut else "")
        header = term_safe(f"── {pv.source}: {pv.n_tokens} tokens, {enc.n_trained} trained "
                  f"(--loss {config.loss}, --template {config.template}, cutoff "
                  f"{config.cutoff_len}{cut})", keep_newlines=False)
        if enc.n_trained == 0:
            header += " - nothing trained: training drops this dialogue; raise --cutoff-len"
        if plain:
            out, inside = [], False
            for piece, trained in pv.pieces:
                if trained != inside:
                    out.append("⟦" if trained else "⟧")
                    inside = trained
                out.append(piece)
            if inside:
                out.append("⟧")
            echo(header)
            echo("".join(out))
            print()
            continue
        text = Text()
        n = 0
        for piece, trained in pv.pieces:
            piece = term_safe(piece)  # dialogue text is data, not terminal commands
            if trained:
                text.append(piece, style="bold black on green" if n % 2 == 0
                            else "bold black on bright_green")
                n += 1
            else:
                text.append(piece, style="dim")
        console.print(header, style="bold")
        console.print(text)
        console.print("trained tokens on green (alternating shades mark token boundaries); "
                      "dim text is context only", style="italic")
        console.print()
    return 0
