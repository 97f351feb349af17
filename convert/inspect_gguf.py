"""``baize-convert inspect``: what a GGUF file holds, read from its header alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baize_convert import ConvertError
from baize_tui.gguf_header import (
    GGUFHeader,
    GGUFHeaderError,
    file_type_label,
    read_header,
)


def open_header(path: Path) -> GGUFHeader:
    """Read a GGUF's header, turning every way it can be broken into one clear error."""
    try:
        return read_header(path)
    except GGUFHeaderError as exc:
        raise ConvertError(f"{path}: {exc}") from None


def inspect_gguf(path: Path) -> dict[str, Any]:
    """A summary of a GGUF: architecture, sizes, vocab, quant type, template, tensors."""
    info = open_header(path).info()
    return {
        "path": str(path),
        "architecture": info.architecture or "unknown",
        "type": info.kind,
        "name": info.name,
        "file_type": file_type_label(info.file_type),
        "context_length": info.context_length,
        "embedding_length": info.embedding_length,
        "block_count": info.block_count,
        "head_count": info.head_count,
        "head_count_kv": info.head_count_kv,
        "vocab_size": info.vocab_size,
        "bos_token_id": info.bos_token_id,
        "eos_token_id": info.eos_token_id,
        "add_bos_token": info.add_bos_token,
        "add_eos_token": info.add_eos_token,
        "chat_template": info.chat_template,
        "adapter_type": info.adapter_type,
        "lora_alpha": info.lora_alpha,
        "tensor_count": info.n_tensors,
        "tensor_types": info.tensor_types,
        "n_params": info.n_params,
        "file_size": info.file_size,
    }


def print_summary(info: dict[str, Any], *, as_json: bool = False) -> None:
    """Print the summary as aligned lines (or JSON)."""
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    from baize_tui.formatting import human_bytes

    template = info["chat_template"]
    rows = [
        ("file", info["path"]),
        ("architecture", f"{info['architecture']} ({info['type']})"),
        ("name", info["name"]),
        ("quant type", info["file_type"]),
        ("context length", info["context_length"]),
        ("embedding / blocks", f"{info['embedding_length']} / {info['block_count']}"),
        ("heads (kv)", f"{info['head_count']} ({info['head_count_kv']})"),
        ("vocab", f"{info['vocab_size']} (bos {info['bos_token_id']}, eos {info['eos_token_id']})"),
        ("chat template", f"{len(template)} chars, Baize format" if template and "[|Human|]" in template
         else ("present" if template else "none")),
        ("tensors", f"{info['tensor_count']}: " + ", ".join(f"{k} {v}" for k, v in info["tensor_types"].items())),
        ("parameters", f"{info['n_params']:,}"),
        ("size", human_bytes(info["file_size"])),
    ]
    if info["adapter_type"]:
        rows.insert(2, ("adapter", f"{info['adapter_type']}, alpha {info['lora_alpha']}"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
