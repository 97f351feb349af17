"""``baize-convert inspect``: what a GGUF file holds, read from its header (memory-mapped)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import gguf

from baize_convert import ConvertError


def _field(reader: gguf.GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()


def file_type_label(value: int | None) -> str:
    """``general.file_type`` as llama.cpp names it, e.g. 15 -> 'Q4_K_M'."""
    if value is None:
        return "unknown"
    try:
        name = gguf.LlamaFileType(int(value)).name
    except ValueError:
        return f"unknown ({value})"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def open_reader(path: Path) -> gguf.GGUFReader:
    """Open a GGUF, turning every way it can be broken into one clear error."""
    if not path.exists():
        raise ConvertError(f"{path}: no such file")
    if path.is_dir():
        raise ConvertError(f"{path}: is a directory, expected a .gguf file")
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ConvertError(f"{path}: not a GGUF file (wrong magic bytes)")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors...
        raise ConvertError(f"{path}: corrupt or truncated GGUF ({type(exc).__name__}: {exc})") from None
    size = path.stat().st_size
    for tensor in reader.tensors:
        if tensor.data_offset + tensor.n_bytes > size:
            raise ConvertError(
                f"{path}: truncated (tensor {tensor.name} ends past the end of the file, "
                f"{size} bytes); re-download or re-convert it"
            )
    return reader


def inspect_gguf(path: Path) -> dict[str, Any]:
    """A summary of a GGUF: architecture, sizes, vocab, quant type, template, tensors."""
    reader = open_reader(path)
    arch = _field(reader, gguf.Keys.General.ARCHITECTURE) or "unknown"

    def llm(key: str) -> Any:
        return _field(reader, key.format(arch=arch))

    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    types = Counter(t.tensor_type.name for t in reader.tensors)
    template = _field(reader, gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    return {
        "path": str(path),
        "architecture": arch,
        "type": _field(reader, gguf.Keys.General.TYPE) or "model",
        "name": _field(reader, gguf.Keys.General.NAME),
        "file_type": file_type_label(_field(reader, gguf.Keys.General.FILE_TYPE)),
        "context_length": llm(gguf.Keys.LLM.CONTEXT_LENGTH),
        "embedding_length": llm(gguf.Keys.LLM.EMBEDDING_LENGTH),
        "block_count": llm(gguf.Keys.LLM.BLOCK_COUNT),
        "head_count": llm(gguf.Keys.Attention.HEAD_COUNT),
        "head_count_kv": llm(gguf.Keys.Attention.HEAD_COUNT_KV),
        "vocab_size": len(tokens.data) if tokens is not None else None,
        "bos_token_id": _field(reader, gguf.Keys.Tokenizer.BOS_ID),
        "eos_token_id": _field(reader, gguf.Keys.Tokenizer.EOS_ID),
        "add_bos_token": _field(reader, gguf.Keys.Tokenizer.ADD_BOS),
        "add_eos_token": _field(reader, gguf.Keys.Tokenizer.ADD_EOS),
        "chat_template": template,
        "adapter_type": _field(reader, gguf.Keys.Adapter.TYPE),
        "lora_alpha": _field(reader, gguf.Keys.Adapter.LORA_ALPHA),
        "tensor_count": len(reader.tensors),
        "tensor_types": dict(sorted(types.items())),
        "n_params": int(sum(int(t.n_elements) for t in reader.tensors)),
        "file_size": path.stat().st_size,
    }


def print_summary(info: dict[str, Any], *, as_json: bool = False) -> None:
    """Print the summary as aligned lines (or JSON)."""
    if as_json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return
    from baize_convert.pipeline import human_bytes

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
