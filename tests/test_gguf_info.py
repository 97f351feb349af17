"""The typed GGUF description against gguf-py's own reader, on GGUFs our converter wrote."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import gguf
import pytest

from baize_tui.gguf_header import GGUFInfo, read_header


def _reader_facts(path: Path) -> dict[str, object]:
    reader = gguf.GGUFReader(path)

    def scalar(key: str) -> object:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    arch = scalar(gguf.Keys.General.ARCHITECTURE)
    tokens = reader.get_field(gguf.Keys.Tokenizer.LIST)
    return {
        "architecture": arch,
        "file_type": scalar(gguf.Keys.General.FILE_TYPE),
        "context_length": scalar(gguf.Keys.LLM.CONTEXT_LENGTH.format(arch=arch)),
        "block_count": scalar(gguf.Keys.LLM.BLOCK_COUNT.format(arch=arch)),
        "head_count_kv": scalar(gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=arch)),
        "vocab_size": None if tokens is None else len(tokens.data),
        "bos_token_id": scalar(gguf.Keys.Tokenizer.BOS_ID),
        "chat_template": scalar(gguf.Keys.Tokenizer.CHAT_TEMPLATE),
        "n_tensors": len(reader.tensors),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "n_params": sum(int(t.n_elements) for t in reader.tensors),
    }


def test_info_matches_gguf_py(tiny_gguf: Path) -> None:
    info = read_header(tiny_gguf).info()
    assert isinstance(info, GGUFInfo)
    facts = _reader_facts(tiny_gguf)
    assert {key: getattr(info, key) for key in facts} == facts
    assert info.kind == "model" and info.architecture == "llama"
    assert info.quant_label == gguf.LlamaFileType(info.file_type).name.removeprefix(
        "MOSTLY_").removeprefix("ALL_")
    assert info.data_end == info.file_size


def test_one_description_feeds_the_engine_models_and_inspect(tiny_gguf: Path) -> None:
    from baize_convert.inspect_gguf import inspect_gguf as convert_inspect
    from baize_tui.engines.llama import inspect_gguf as engine_inspect
    from baize_tui.models import describe

    info = read_header(tiny_gguf).info()
    assert engine_inspect(tiny_gguf)["context_length"] == info.context_length
    model = describe(tiny_gguf)
    assert (model.quant, model.context_length, model.n_params) == (
        info.quant_label, info.context_length, info.n_params)
    summary = convert_inspect(tiny_gguf)
    assert summary["vocab_size"] == info.vocab_size and summary["file_type"] == info.quant_label


def test_a_mistyped_key_is_none_not_a_crash(tiny_gguf: Path, tmp_path: Path) -> None:
    """A key of the wrong type (a string where a number belongs) reads as missing."""
    reader = gguf.GGUFReader(tiny_gguf)
    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", "llama")
    writer.add_string("llama.context_length", "a lot")
    writer.add_string(gguf.Keys.General.NAME, "odd")
    for tensor in reader.tensors[:1]:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    info = read_header(tmp_path / "odd.gguf").info()
    assert info.context_length is None and info.name == "odd"
    with pytest.raises(AttributeError):
        info.name = "changed"  # type: ignore[misc]  # frozen
