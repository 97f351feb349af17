"""``baize-convert inspect``: what a GGUF file holds, read from its header alone."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import gguf

from baize_convert import ConvertError
from baize_tui.gguf_header import (
    ArrayInfo,
    GGUFHeader,
    GGUFHeaderError,
    file_type_label,
    read_header,
    type_name,
)


def open_header(path: Path) -> GGUFHeader:
    """Read a GGUF's header, turning every way it can be broken into one clear error."""
    try:
        return read_header(path)
    except GGUFHeaderError as exc:
        raise ConvertError(f"{path}: {exc}") from None


def inspect_gguf(path: Path) -> dict[str, Any]:
    """A summary of a GGUF: architecture, sizes, vocab, quant type, template, tensors."""
    header = open_header(path)
    keys = gguf.Keys
    tokens = header.get(keys.Tokenizer.LIST)
    types = Counter(type_name(t.type_id) for t in header.tensors)
    template = header.get(keys.Tokenizer.CHAT_TEMPLATE)
    return {
        "path": str(path),
        "architecture": header.architecture or "unknown",
        "type": header.get(keys.General.TYPE) or "model",
        "name": header.get(keys.General.NAME),
        "file_type": file_type_label(header.get(keys.General.FILE_TYPE)),
        "context_length": header.get(keys.LLM.CONTEXT_LENGTH),
        "embedding_length": header.get(keys.LLM.EMBEDDING_LENGTH),
        "block_count": header.get(keys.LLM.BLOCK_COUNT),
        "head_count": header.get(keys.Attention.HEAD_COUNT),
        "head_count_kv": header.get(keys.Attention.HEAD_COUNT_KV),
        "vocab_size": tokens.count if isinstance(tokens, ArrayInfo) else None,
        "bos_token_id": header.get(keys.Tokenizer.BOS_ID),
        "eos_token_id": header.get(keys.Tokenizer.EOS_ID),
        "add_bos_token": header.get(keys.Tokenizer.ADD_BOS),
        "add_eos_token": header.get(keys.Tokenizer.ADD_EOS),
        "chat_template": template if isinstance(template, str) else None,
        "adapter_type": header.get(keys.Adapter.TYPE),
        "lora_alpha": header.get(keys.Adapter.LORA_ALPHA),
        "tensor_count": len(header.tensors),
        "tensor_types": dict(sorted(types.items())),
        "n_params": header.n_params,
        "file_size": header.file_size,
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
