"""``baize-convert`` command line: merge, lora, verify, inspect.

Thin: parses arguments and calls the modules beside it, which import numpy, gguf and
llama_cpp only when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from baize_tui import __version__
from baize_tui.errors import run_reporting_errors

QUANT_HELP = "f32, f16 (default), bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k; aliases q4, q5, q8"


def build_parser() -> argparse.ArgumentParser:
    """The ``baize-convert`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="baize-convert",
        description="Merge Baize LoRA adapters into LLaMA and write (quantized) GGUF files.",
    )
    parser.add_argument("--version", action="version", version=f"baize-convert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    merge = sub.add_parser(
        "merge",
        help="merge LoRA adapters into a LLaMA checkpoint and write a GGUF",
        description="Stream a Hugging Face LLaMA checkpoint, merge LoRA adapters tensor by "
        "tensor, and write a GGUF (optionally quantized). Known Baize adapters need no --base.",
    )
    merge.add_argument("--base", help="HF LLaMA directory or hub id (optional for known Baize adapters)")
    merge.add_argument("--lora", action="append", default=[], metavar="LORA",
                       help="PEFT adapter directory or hub id; repeat to apply several in order")
    merge.add_argument("--quantize", "-q", default="f16", metavar="TYPE", help=QUANT_HELP)
    merge.add_argument("-o", "--output", type=Path, help="output .gguf (default: a descriptive name here)")
    merge.add_argument("--hf-out", type=Path, metavar="DIR",
                       help="also write the merged model as HF safetensors shards")
    merge.add_argument("--name", help="model name stored in general.name (default: from the "
                       "adapter and base, e.g. baize-lora-7B or <base>-<run dir>)")
    merge.add_argument("--template", metavar="baize|base|FILE",
                       help="chat template to embed (default: the one the adapter was trained "
                       "in, else Baize's)")
    merge.add_argument("--force", action="store_true", help="overwrite an existing output")
    merge.set_defaults(func=_merge)

    lora = sub.add_parser(
        "lora",
        help="write a LoRA adapter as a GGUF adapter that llama.cpp applies at load time",
    )
    lora.add_argument("--lora", required=True, help="PEFT adapter directory or hub id")
    lora.add_argument("--base", help="the base checkpoint (for shapes and heads)")
    lora.add_argument("-o", "--output", type=Path, help="output .gguf")
    lora.add_argument("--outtype", default="f32", choices=["f32", "f16"],
                      help="tensor type of the adapter (default f32)")
    lora.add_argument("--force", action="store_true", help="overwrite an existing output")
    lora.set_defaults(func=_lora)

    verify = sub.add_parser(
        "verify",
        help="compare a GGUF with its source in transformers: tokens and logits",
    )
    verify.add_argument("model", type=Path, help="the GGUF to check")
    verify.add_argument("--hf", required=True, help="the HF checkpoint it came from")
    verify.add_argument("--lora", action="append", default=[], help="adapters merged into it")
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.set_defaults(func=_verify)

    inspect = sub.add_parser("inspect", help="show a GGUF's architecture, vocab, quant type, template")
    inspect.add_argument("model", type=Path, help="a .gguf file")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(func=_inspect)
    return parser


def _merge(args: argparse.Namespace) -> int:
    from baize_convert.pipeline import MergeRequest, run_merge

    request = MergeRequest(base=args.base, loras=list(args.lora), quant=args.quantize,
                           output=args.output, hf_out=args.hf_out, name=args.name,
                           force=args.force, template=args.template)
    run_merge(request)
    return 0


def _lora(args: argparse.Namespace) -> int:
    from baize_convert.pipeline import run_lora_export

    run_lora_export(args.lora, base=args.base, output=args.output, outtype=args.outtype,
                    force=args.force)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from baize_convert.verify import print_report, verify_gguf

    report = verify_gguf(args.model, args.hf, loras=args.lora)
    print_report(report, as_json=args.json)
    return 0 if report.ok else 1


def _inspect(args: argparse.Namespace) -> int:
    from baize_convert.inspect_gguf import inspect_gguf, print_summary

    print_summary(inspect_gguf(args.model), as_json=args.json)
    return 0


def _interrupt_on_termination() -> None:
    """Turn SIGTERM and SIGHUP (a closed terminal, a dropped SSH session) into the same
    clean interrupt as Ctrl-C, so temporary files are removed on the way out."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``baize-convert`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    _interrupt_on_termination()
    return run_reporting_errors("baize-convert", lambda: args.func(args),
                                interrupted="interrupted; no output was written")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
