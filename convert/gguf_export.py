"""Write a LLaMA GGUF in one streaming pass: plan every tensor, write the header, then
load → merge → permute → convert → write one tensor at a time."""

from __future__ import annotations

import errno
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType as T

from baize_convert import ConvertError
from baize_convert.checkpoint import ROPE_FREQS, Checkpoint, rope_scaling, rope_type
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
    if hf_name == ROPE_FREQS:
        return (-1, 0, hf_name)
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
        gname = hf_name if hf_name == ROPE_FREQS else gguf_name_for(hf_name, name_map)
        qtype = qt.tensor_type(gname, ref.shape)
        plans.append(TensorPlan(hf_name, gname, ref.shape, qtype, tensor_nbytes(ref.shape, qtype)))
    if not ckpt.tied and not any(p.gguf_name == "output.weight" for p in plans):
        raise ConvertError(
            f"{ckpt.directory}: no lm_head.weight, and config.json does not set "
            "tie_word_embeddings; the checkpoint is incomplete"
        )
    # Tied embeddings: no output.weight; llama.cpp then uses token_embd as the output, as
    # its own converter writes these models.
    return plans


# Large tensors are processed in row blocks of about this many values (32 MB as float32), so
# peak memory is a block plus one encoded tensor, not several float32 copies of the largest.
CHUNK_ELEMENTS = 8 * 1024 * 1024


def merged_tensor(ckpt: Checkpoint, adapters: Iterable[Adapter], hf_name: str, start: int = 0,
                  stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of a base tensor as float32 with every adapter merged in (HF layout)."""
    w = ckpt.load(hf_name, start, stop)
    for adapter in adapters:
        w = adapter.merge_into(hf_name, w, start)
    if not np.isfinite(w).all():
        raise ConvertError(f"tensor {hf_name} has NaN or infinite values after merging")
    return w


def row_chunks(shape: tuple[int, ...], n_head: int | None,
               chunk_elements: int | None = None) -> list[tuple[int, int]]:
    """Row ranges covering a tensor; Q/K ranges hold whole heads (the permutation is per head)."""
    rows = shape[0] if shape else 1
    row_elems = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, (chunk_elements or CHUNK_ELEMENTS) // row_elems)
    if n_head:
        head_rows = rows // n_head
        step = max(head_rows, step // head_rows * head_rows)
    return [(start, min(start + step, rows)) for start in range(0, rows, step)]


def encode_tensor(w: np.ndarray, qtype: T) -> np.ndarray:
    """Convert a float32 array to the bytes (or floats) GGUF stores for ``qtype``."""
    if qtype == T.F32:
        return np.ascontiguousarray(w, dtype=np.float32)
    if qtype == T.F16:
        return np.ascontiguousarray(w, dtype=np.float16)
    return gguf.quants.quantize(w, qtype)


def add_tokenizer_metadata(writer: gguf.GGUFWriter, vocab: Vocab) -> None:
    """``tokenizer.ggml.*``: a sentencepiece (``llama``) or byte-level BPE (``gpt2``) vocab."""
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    if vocab.model == "llama":
        writer.add_token_scores(vocab.scores)  # SPM merges by score; BPE by the merge list
    writer.add_token_types(vocab.types)
    if vocab.merges:
        writer.add_token_merges(vocab.merges)
    writer.add_bos_token_id(vocab.bos_id)
    writer.add_eos_token_id(vocab.eos_id)
    if vocab.unk_id is not None:
        writer.add_unk_token_id(vocab.unk_id)
    if vocab.pad_id is not None:
        writer.add_pad_token_id(vocab.pad_id)
    if vocab.eot_id is not None:
        writer.add_eot_token_id(vocab.eot_id)
    writer.add_add_bos_token(vocab.add_bos)
    # Baize trained with add_eos_token=True, but llama.cpp must never append EOS to a prompt.
    writer.add_add_eos_token(vocab.add_eos if vocab.model == "gpt2" else False)


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
    writer.add_rope_dimension_count(ckpt.head_dim)
    writer.add_rope_freq_base(ckpt.rope_theta)
    if rope_type(ckpt.config) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope_scaling(ckpt.config)["factor"]))
    writer.add_layer_norm_rms_eps(ckpt.rms_norm_eps)
    writer.add_vocab_size(ckpt.vocab_rows)
    add_tokenizer_metadata(writer, vocab)
    writer.add_chat_template(chat_template)


TensorSink = Callable[[str, np.ndarray], None]


@dataclass(frozen=True)
class _Job:
    plan: TensorPlan
    start: int
    stop: int
    n_head: int | None
    last: bool  # the tensor's final row block


def _jobs(plans: list[TensorPlan], heads: tuple[int, int]) -> Iterator[_Job]:
    for p in plans:
        n_head = qk_heads(p.hf_name, heads)
        chunks = row_chunks(p.shape, n_head)
        for i, (start, stop) in enumerate(chunks):
            yield _Job(p, start, stop, n_head, i == len(chunks) - 1)


def _process(ckpt: Checkpoint, adapters: list[Adapter], job: _Job,
             keep_merged: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """Load, merge, permute and encode one row block (runs in a worker thread)."""
    p = job.plan
    w = merged_tensor(ckpt, adapters, p.hf_name, job.start, job.stop)
    merged = w if keep_merged else None
    if job.n_head is not None:
        w = hf_to_gguf_qk(w, (job.stop - job.start) // (p.shape[0] // job.n_head))  # a new array
    return merged, encode_tensor(w, p.qtype)


class _TensorStream:
    """Writes each tensor's data row block by row block, exactly as
    ``GGUFWriter.write_tensor_data`` writes a whole tensor (alignment padding before and
    after), so a 128k-row embedding never sits encoded in memory whole.

    Streaming uses the writer's own bookkeeping (``fout``, ``tensors``, ``state``,
    ``write_padding``); on a big-endian host, or a gguf without those, blocks are gathered
    and handed to ``write_tensor_data`` instead.
    """

    def __init__(self, writer: gguf.GGUFWriter) -> None:
        self.writer = writer
        self.streaming = (sys.byteorder == "little"
                          and writer.endianess == gguf.GGUFEndian.LITTLE
                          and all(hasattr(writer, a) for a in ("fout", "tensors", "write_padding")))
        self.fout: Any = None
        self.written = 0
        self.gathered: np.ndarray | None = None

    def write(self, p: TensorPlan, start: int, data: np.ndarray) -> None:
        """One row block of ``p`` (blocks arrive in order)."""
        if not self.streaming:
            if self.gathered is None:
                self.gathered = np.empty((p.shape[0], *data.shape[1:]), dtype=data.dtype)
            self.gathered[start:start + data.shape[0]] = data
            return
        if self.fout is None:
            w = self.writer
            if w.state not in (gguf.WriterState.TI_DATA, gguf.WriterState.WEIGHTS):
                raise ConvertError(f"tensor {p.hf_name}: the GGUF writer is not ready for data")
            if w.fout is None:
                raise ConvertError(f"tensor {p.hf_name}: the GGUF writer has no open file")
            file_id = next(i for i, infos in enumerate(w.tensors) if infos)
            self.fout = w.fout[file_id]
            info = w.tensors[file_id].pop(next(iter(w.tensors[file_id])))
            if info.nbytes != p.nbytes:
                raise ConvertError(f"tensor {p.hf_name}: planned size differs from the header")
            w.write_padding(self.fout, self.fout.tell())
        try:
            np.ascontiguousarray(data).tofile(self.fout)
        except OSError as exc:  # numpy's short write carries no errno and no file name
            raise OSError(exc.errno or errno.ENOSPC,
                          exc.strerror or f"{exc}: the disk is full or the file hit a size limit",
                          getattr(self.fout, "name", None)) from exc
        self.written += data.nbytes

    def finish(self, p: TensorPlan) -> None:
        """The tensor's last block was written: check its size and pad to the alignment."""
        if not self.streaming:
            out, self.gathered = self.gathered, None
            if out is None or out.nbytes != p.nbytes:  # GGUFWriter only asserts this
                raise ConvertError(f"tensor {p.hf_name}: encoded size differs from the plan")
            self.writer.write_tensor_data(out)
            return
        if self.written != p.nbytes:
            raise ConvertError(f"tensor {p.hf_name}: encoded size differs from the plan")
        self.writer.write_padding(self.fout, self.written)
        self.writer.state = gguf.WriterState.WEIGHTS
        self.fout, self.written = None, 0


def write_gguf(path: Path, ckpt: Checkpoint, adapters: list[Adapter], vocab: Vocab,
               plans: list[TensorPlan], *, name: str, file_type: int, chat_template: str,
               on_tensor: Callable[[TensorPlan], None] | None = None,
               hf_sink: TensorSink | None = None, workers: int | None = None) -> None:
    """Stream the model into ``path`` (the caller picks a temporary name and renames it).

    Row blocks are loaded, merged and encoded by a few worker threads (numpy releases the
    GIL) within a small window, and written strictly in order by this thread.
    """
    writer = gguf.GGUFWriter(path, "llama")
    workers = workers or min(os.cpu_count() or 1, 4)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
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
        jobs = _jobs(plans, (ckpt.n_head, ckpt.n_head_kv))
        pending: deque[tuple[_Job, Future]] = deque()

        def submit_next() -> None:
            job = next(jobs, None)
            if job is not None:
                pending.append((job, pool.submit(_process, ckpt, adapters, job,
                                                 hf_sink is not None)))

        for _ in range(workers + 1):
            submit_next()
        sink = _TensorStream(writer)
        while pending:
            job, future = pending.popleft()
            merged, data = future.result()
            submit_next()
            p = job.plan
            if hf_sink is not None and merged is not None and p.hf_name not in ckpt.generated:
                hf_sink(p.hf_name, merged)
            sink.write(p, job.start, data)
            del merged, data
            if job.last:
                sink.finish(p)
                if on_tensor is not None:
                    on_tensor(p)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
