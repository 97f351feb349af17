"""Merge guards: the output is never one of the inputs, and a base that is not the adapter's
own is named before the merge goes ahead.

* :func:`check_output_not_input`: ``-o LORA/adapter_model.bin`` or ``-o BASE/model.safetensors``
  would overwrite the weights being read. An output that is the same file as an input (same
  inode, hard links included) or that lies in an input directory under a weight, config or
  tokenizer file name is refused, ``--force`` or not.
* :func:`base_mismatch_warning`: an adapter's ``base_model_name_or_path`` that names another
  model than ``--base`` is worth one line even when the shapes happen to fit.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from baize_tui.errors import UserError

#: names in an input directory an output may never take
INPUT_FILE_PATTERNS = ("*.bin", "*.safetensors", "*.pt", "*.pth", "*.ckpt", "*.gguf", "*.json",
                       "*.model", "tokenizer*", "*.index.json")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_output_not_input(output: Path, input_dirs: list[Path], what: str = "-o") -> None:
    """Raise :class:`UserError` (exit 2) when ``output`` would overwrite an input file."""
    out = Path(output).absolute()
    out_dir = out.parent.resolve()
    for directory in input_dirs:
        directory = Path(directory).resolve()
        if out.exists():
            for entry in directory.iterdir():
                if entry.is_file() and _same_file(entry, out):
                    raise UserError(f"{what} {output} is the input file {entry}; refusing to "
                                    "overwrite an input (with or without --force); write elsewhere")
        if out_dir == directory and (
            out.exists() or any(fnmatch.fnmatch(out.name.lower(), p) for p in INPUT_FILE_PATTERNS)
        ):
            raise UserError(f"{what} {output} is inside the input directory {directory} under an "
                            "input file's name; refusing to overwrite inputs (with or without "
                            "--force); write elsewhere")


def _model_name(spec: str) -> str:
    return Path(str(spec).rstrip("/")).name.lower()


def base_mismatch_warning(adapter_dir: Path, adapter_base: str | None, base_spec: str,
                          base_dir: Path) -> str | None:
    """A warning line when the adapter records another base than the one given, else None."""
    if not adapter_base:
        return None
    recorded = _model_name(adapter_base)
    if recorded in (_model_name(base_spec), _model_name(str(base_dir))):
        return None
    if Path(adapter_base).exists() and Path(adapter_base).resolve() == Path(base_dir).resolve():
        return None
    return (f"warning: {adapter_dir}/adapter_config.json names its base "
            f"{adapter_base!r}, but --base is {base_spec!r}; the shapes fit, so the merge goes "
            "ahead; check that this is the base the adapter was trained on")
