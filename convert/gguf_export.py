"""Write a LLaMA GGUF in one streaming pass: plan every tensor, write the header, then
load → merge → permute → convert → write one tensor at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from baize_convert import ConvertError
from baize_convert.checkpoint import Checkpoint
from baize_convert.lora import Adapter
from baize_convert.quantize import QuantType, tensor_nbytes
from baize_convert.vocab import Vocab


@dataclass(frozen=True)
class TensorPlan:
    """One output tensor: where it comes from and what it becomes."""

    hf_name: str
    gguf_name: str
    shape: tuple[int, ...]  # numpy (HF) shape
    qtype: T
    nbytes: int


def hf_to_gguf_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo HF's rotate-half row order of a Q/K projection (or a LoRA B) for llama.cpp."""
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2)
            .reshape(w.shape))


def qk_heads(hf_name: str, ckpt_or_heads: tuple[int, int]) -> int | None:
    """Heads to permute by, for q_proj/k_proj weights; None for every other tensor."""
    n_head, n_head_kv = ckpt_or_heads
    if hf_name.endswith("self_attn.q_proj.weight"):
        return n_head
    if hf_name.endswith("self_attn.k_proj.weight"):
        return n_head_kv
    return None


def gguf_name_for(hf_name: str, name_map: gguf.TensorNameMap) -> str:
    """The GGUF name of a HF LLaMA tensor, or a clear error."""
    name = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if name is None:
        raise ConvertError(f"tensor {hf_name} has no GGUF name for LLaMA; is this a LLaMA checkpoint?")
    return name


def _order_key(hf_name: str) -> tuple[int, int, str]:
    if hf_name.startswith("model.embed_tokens"):
        return (0, 0, hf_name)
    if hf_name.startswith("model.layers."):
        return (1, int(hf_name.split(".")[2]), hf_name)
    return (2, 0, hf_name)


def plan_tensors(ckpt: Checkpoint, qt: QuantType) -> list[TensorPlan]:
    """Every output tensor in write order (embedding, blocks, final norm, output)."""
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, ckpt.n_layers)
    plans = []
    for hf_name in sorted(ckpt.refs, key=_order_key):
        ref = ckpt.refs[hf_name]
        gname = gguf_name_for(hf_name, name_map)
        qtype = qt.tensor_type(gname, ref.shape)
        plans.append(TensorPlan(hf_name, gname, ref.shape, qtype, tensor_nbytes(ref.shape, qtype)))
    if not any(p.gguf_name == "output.weight" for p in plans):
        raise ConvertError(f"{ckpt.directory}: no lm_head.weight (tied embeddings are not LLaMA-1)")
    return plans


def merged_tensor(ckpt: Checkpoint, adapters: Iterable[Adapter], hf_name: str) -> np.ndarray:
    """A base tensor as float32 with every adapter merged in, in HF layout."""
    w = ckpt.load(hf_name)
    for adapter in adapters:
        w = adapter.merge_into(hf_name, w)
    if not np.isfinite(w).all():
        raise ConvertError(f"tensor {hf_name} has NaN or infinite values after merging")
    return w


def encode_tensor(w: np.ndarray, qtype: T) -> np.ndarray:
    """Convert a float32 array to the bytes (or floats) GGUF stores for ``qtype``."""
    if qtype == T.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(w, dtype=np.float16)
    return gguf.quants.quantize(w, qtype)


def add_model_metadata(writer: gguf.GGUFWriter, ckpt: Checkpoint, vocab: Vocab, *, name: str,
                       file_type: int, chat_template: str) -> None:
    """Every ``general.*``, ``llama.*`` and ``tokenizer.*`` key a LLaMA GGUF needs."""
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_size_label(gguf.size_label(ckpt.n_params, 0, 0, 0))
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(ckpt.context_length)
    writer.add_embedding_length(ckpt.hidden_size)
    writer.add_block_count(ckpt.n_layers)
    writer.add_feed_forward_length(int(ckpt.config["intermediate_size"]))
    writer.add_head_count(ckpt.n_head)
    writer.add_head_count_kv(ckpt.n_head_kv)
    head_dim = int(ckpt.config.get("head_dim") or ckpt.hidden_size // ckpt.n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(ckpt.rope_theta)
    writer.add_layer_norm_rms_eps(ckpt.rms_norm_eps)
    writer.add_vocab_size(ckpt.vocab_rows)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab.tokens)
    writer.add_token_scores(vocab.scores)
    writer.add_token_types(vocab.types)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    writer.add_unk_token_id(vocab.unk_id)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)  # Baize trained with add_eos_token=True; llama.cpp must not append it
    writer.add_chat_template(chat_template)


TensorSink = Callable[[str, np.ndarray], None]


def write_gguf(path: Path, ckpt: Checkpoint, adapters: list[Adapter], vocab: Vocab,
               plans: list[TensorPlan], *, name: str, file_type: int, chat_template: str,
               on_tensor: Callable[[TensorPlan], None] | None = None,
               hf_sink: TensorSink | None = None) -> None:
    """Stream the model into ``path`` (the caller picks a temporary name and renames it)."""
    writer = gguf.GGUFWriter(path, "llama")
    try:
        add_model_metadata(writer, ckpt, vocab, name=name, file_type=file_type,
                           chat_template=chat_template)
        for p in plans:
            byte_shape = p.shape if p.qtype in (T.F32, T.F16) else \
                gguf.quant_shape_to_byte_shape(p.shape, p.qtype)
            dtype = {T.F32: np.float32, T.F16: np.float16}.get(p.qtype, np.uint8)
            writer.add_tensor_info(p.gguf_name, byte_shape, np.dtype(dtype), p.nbytes,
                                   raw_dtype=None if p.qtype in (T.F32, T.F16) else p.qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        heads = (ckpt.n_head, ckpt.n_head_kv)
        for p in plans:
            w = merged_tensor(ckpt, adapters, p.hf_name)
            if hf_sink is not None:
                hf_sink(p.hf_name, w)
            n_head = qk_heads(p.hf_name, heads)
            if n_head is not None:
                w = hf_to_gguf_qk(w, n_head)
            data = encode_tensor(w, p.qtype)
            if data.nbytes != p.nbytes:  # GGUFWriter only asserts this
                raise ConvertError(f"tensor {p.hf_name}: encoded {data.nbytes} bytes, planned {p.nbytes}")
            writer.write_tensor_data(data)
            del w, data
            if on_tensor is not None:
                on_tensor(p)
    finally:
        writer.close()
