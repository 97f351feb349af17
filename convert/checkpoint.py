"""Lazy reader for Hugging Face LLaMA checkpoints: safetensors or pickled ``.bin``, single or sharded.

Nothing is loaded up front: safetensors headers are parsed and ``.bin`` pickles are read with
an allow-listed unpickler (no torch needed), keeping only where each tensor's bytes are.
``load(name, start, stop)`` reads one tensor, or a range of its rows, as a new float32 array,
so peak memory stays near one chunk of one tensor whatever the model size.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baize_convert import ConvertError
from baize_convert.rawio import pread_into, to_f32
from baize_convert.torchbin import load_state_dict, read_rows

LLAMA_ARCHITECTURES = {"LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"}
# model_type values of the LLaMA family that llama.cpp runs as "llama" (Mistral 7B included).
LLAMA_MODEL_TYPES = {"llama", "mistral"}
# rope_scaling types written the way llama.cpp reads them ("default"/None: no scaling).
ROPE_TYPES = {"default", "llama3", "linear"}
# Buffers some old checkpoints carry that are not weights (BAIZE.md §2).
SKIPPED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")

ROPE_FREQS = "rope_freqs.weight"  # a tensor llama.cpp needs that the HF checkpoint computes

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives and what it looks like, without its data."""

    name: str
    file: Path
    dtype: str  # "F32", "F16", "BF16", ...
    shape: tuple[int, ...]

    @property
    def n_elements(self) -> int:
        """Number of values."""
        return int(np.prod(self.shape)) if self.shape else 1


class SafetensorsFile:
    """A safetensors file, parsed from its header without the safetensors library; tensors
    (or row ranges of them) are read on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        try:
            with path.open("rb") as fh:
                (header_len,) = struct.unpack("<Q", fh.read(8))
                if header_len > size - 8:
                    raise ValueError("header longer than the file")
                header = json.loads(fh.read(header_len))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise ConvertError(
                f"{path}: not a valid safetensors file ({exc}); re-download it"
            ) from None
        self.data_start = 8 + header_len
        self.header: dict[str, Any] = {k: v for k, v in header.items() if k != "__metadata__"}
        data_len = size - self.data_start
        for name, info in self.header.items():
            end = info["data_offsets"][1]
            if end > data_len:
                raise ConvertError(
                    f"{path}: truncated (tensor {name} ends at byte {self.data_start + end}, "
                    f"file has {size}); re-download it"
                )

    def refs(self) -> Iterator[TensorRef]:
        """Every tensor in the file."""
        for name, info in self.header.items():
            yield TensorRef(name, self.path, info["dtype"], tuple(info["shape"]))

    def load(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one tensor (all rows by default) as a new float32 array."""
        info = self.header[name]
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConvertError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
        shape = tuple(info["shape"])
        rows = shape[0] if shape else 1
        stop = rows if stop is None else stop
        row_elems = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        raw = np.empty((stop - start) * row_elems, dtype=dtype)
        itemsize = np.dtype(dtype).itemsize
        pread_into(self.path, raw, self.data_start + info["data_offsets"][0]
                   + start * row_elems * itemsize)
        raw = raw.reshape((stop - start, *shape[1:]) if shape else ())
        return to_f32(raw, info["dtype"])


class TorchBinFile:
    """A pickled PyTorch shard (``torch.save`` zip), read without torch (see torchbin)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.state = load_state_dict(path)

    def refs(self) -> Iterator[TensorRef]:
        """Every tensor in the file."""
        for name, tensor in self.state.items():
            yield TensorRef(name, self.path, tensor.label, tensor.shape)

    def load(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one tensor (all rows by default) as a new float32 array."""
        tensor = self.state[name]
        return to_f32(read_rows(self.path, tensor, start, stop), tensor.label)


def open_tensor_file(path: Path) -> SafetensorsFile | TorchBinFile:
    """Open a weights file by its extension."""
    if not path.exists():
        raise ConvertError(f"{path}: missing (listed in the index but not on disk)")
    if path.suffix == ".safetensors":
        return SafetensorsFile(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        return TorchBinFile(path)
    raise ConvertError(f"{path}: unknown weights format (expected .safetensors or .bin)")


def _indexed_files(directory: Path, index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError) as exc:
        raise ConvertError(f"{index}: not a valid shard index ({exc})") from None
    files = sorted(set(weight_map.values()))
    missing = [f for f in files if not (directory / f).exists()]
    if missing:
        raise ConvertError(
            f"{directory}: shard(s) {', '.join(missing)} listed in {index.name} are "
            "missing; download the complete checkpoint"
        )
    return [directory / f for f in files]


def _weight_files(directory: Path) -> list[Path]:
    """The weight files to read: safetensors when present (repos often carry both formats),
    else pickled ``.bin`` shards."""
    if (directory / "model.safetensors.index.json").exists():
        return _indexed_files(directory, directory / "model.safetensors.index.json")
    if (directory / "model.safetensors").exists():
        return [directory / "model.safetensors"]
    found = sorted(directory.glob("*.safetensors"))
    if found:
        return found
    if (directory / "pytorch_model.bin.index.json").exists():
        return _indexed_files(directory, directory / "pytorch_model.bin.index.json")
    if (directory / "pytorch_model.bin").exists():
        return [directory / "pytorch_model.bin"]
    raise ConvertError(
        f"{directory}: no model weights found (expected model.safetensors, "
        "pytorch_model.bin or a sharded index)"
    )


def _check_hparams(config: dict[str, Any], path: Path) -> None:
    """The LLaMA fields the converter needs, present and consistent."""
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(config.get(key), int) or config[key] <= 0:
            raise ConvertError(f"{path}: field {key!r} is missing or not a positive integer")
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    if not isinstance(kv_heads, int) or kv_heads <= 0 or heads % kv_heads:
        raise ConvertError(f"{path}: num_key_value_heads={kv_heads} does not divide "
                           f"num_attention_heads={heads}")
    if not config.get("head_dim") and config["hidden_size"] % heads:
        raise ConvertError(f"{path}: hidden_size={config['hidden_size']} is not a multiple of "
                           f"num_attention_heads={heads}")


def rope_scaling(config: dict[str, Any]) -> dict[str, Any]:
    """The rope scaling block (``rope_scaling``, or transformers 5's ``rope_parameters``)."""
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    return scaling if isinstance(scaling, dict) else {}


def rope_type(config: dict[str, Any]) -> str:
    """``default``, ``llama3``, ``linear``, ``yarn``, … (``type`` in older configs)."""
    scaling = rope_scaling(config)
    return str(scaling.get("rope_type") or scaling.get("type") or "default").lower()


def check_family(config: dict[str, Any], path: Path) -> None:
    """Refuse, naming what is unsupported, anything llama.cpp would not run as LLaMA."""
    archs = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type", "llama")).lower()
    if model_type not in LLAMA_MODEL_TYPES or (archs and not set(archs) & LLAMA_ARCHITECTURES):
        named = ", ".join(archs) or model_type
        raise ConvertError(
            f"{path}: architecture {named} is not LLaMA and is not supported; baize-convert "
            "handles the LLaMA family (LlamaForCausalLM: LLaMA 1/2/3, TinyLlama, SmolLM; "
            "MistralForCausalLM: Mistral 7B)"
        )
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ConvertError(f"{path}: attention_bias/mlp_bias LLaMA variants are not supported")
    kind = rope_type(config)
    if kind not in ROPE_TYPES:
        raise ConvertError(
            f"{path}: rope scaling type {kind!r} is not supported (supported: "
            f"{', '.join(sorted(ROPE_TYPES))})"
        )


def llama3_rope_factors(config: dict[str, Any], head_dim: int, theta: float) -> np.ndarray:
    """The ``rope_freqs`` tensor llama.cpp needs for ``rope_type = llama3`` (head_dim/2 floats).

    Same formula as transformers' llama3 RoPE init: wavelengths shorter than
    ``original / high_freq_factor`` keep their frequency, longer than ``original /
    low_freq_factor`` are divided by ``factor``, and the band between is interpolated.
    """
    scaling = rope_scaling(config)
    factor = float(scaling.get("factor", 8.0))
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    original = float(scaling.get("original_max_position_embeddings")
                     or config.get("original_max_position_embeddings") or 8192)
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    wavelen = 2 * np.pi / freqs
    smooth = (original / wavelen - low) / (high - low)
    factors = np.where(wavelen < original / high, 1.0,
                       np.where(wavelen > original / low, factor,
                                1.0 / ((1 - smooth) / factor + smooth)))
    return factors.astype(np.float32)


GENERATED_FILE = Path("<generated>")


@dataclass
class Checkpoint:
    """A LLaMA checkpoint directory: its config and a lazy view of its tensors."""

    directory: Path
    config: dict[str, Any]
    refs: dict[str, TensorRef] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    generated: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. llama3 rope_freqs
    _files: dict[Path, SafetensorsFile | TorchBinFile] = field(default_factory=dict)

    @classmethod
    def open(cls, directory: Path, *, weights: bool = True) -> Checkpoint:
        """Read ``config.json``, check it is LLaMA, and index every tensor.

        ``weights=False`` reads the config only (enough for shapes and head counts).
        """
        config_path = directory / "config.json"
        if not config_path.exists():
            raise ConvertError(f"{directory}: no config.json; is this a Hugging Face model directory?")
        try:
            config = json.loads(config_path.read_text())
        except ValueError as exc:
            raise ConvertError(f"{config_path}: not valid JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ConvertError(f"{config_path}: expected a JSON object, got a "
                               f"{type(config).__name__}")
        check_family(config, config_path)
        _check_hparams(config, config_path)
        ckpt = cls(directory, config)
        if not weights:
            return ckpt
        for path in _weight_files(directory):
            handle = open_tensor_file(path)
            ckpt._files[path] = handle
            for ref in handle.refs():
                if ref.name.endswith(SKIPPED_SUFFIXES):
                    ckpt.skipped.append(ref.name)
                    continue
                if ref.name in ckpt.refs:
                    raise ConvertError(f"{path}: tensor {ref.name} appears in two shards")
                ckpt.refs[ref.name] = ref
        if not ckpt.refs:
            raise ConvertError(f"{directory}: the weight files hold no tensors")
        if ckpt.tied and "lm_head.weight" in ckpt.refs:
            ckpt.skipped.append("lm_head.weight")  # transformers ignores it: output = embedding
            del ckpt.refs["lm_head.weight"]
        if rope_type(config) == "llama3":
            factors = llama3_rope_factors(config, ckpt.head_dim, ckpt.rope_theta)
            ckpt.generated[ROPE_FREQS] = factors
            ckpt.refs[ROPE_FREQS] = TensorRef(ROPE_FREQS, GENERATED_FILE, "F32", factors.shape)
        return ckpt

    def load(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` of one tensor (all rows by default) as a new float32 array."""
        if name in self.generated:
            return self.generated[name][start:stop].copy()
        ref = self.refs[name]
        return self._files[ref.file].load(name, start, stop)

    @property
    def tied(self) -> bool:
        """Whether the output layer is the token embedding (no separate ``lm_head``)."""
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return int(self.config.get("head_dim") or self.hidden_size // self.n_head)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape: from the weights when read, else what the config implies."""
        if self.refs:
            return {name: ref.shape for name, ref in self.refs.items()}
        h, ffn = self.hidden_size, int(self.config["intermediate_size"])
        head_dim = self.head_dim
        vocab = int(self.config.get("vocab_size") or 32000)
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, h),
                                              "model.norm.weight": (h,)}
        if not self.tied:
            shapes["lm_head.weight"] = (vocab, h)
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            shapes |= {p + "self_attn.q_proj.weight": (self.n_head * head_dim, h),
                       p + "self_attn.k_proj.weight": (self.n_head_kv * head_dim, h),
                       p + "self_attn.v_proj.weight": (self.n_head_kv * head_dim, h),
                       p + "self_attn.o_proj.weight": (h, self.n_head * head_dim),
                       p + "mlp.gate_proj.weight": (ffn, h), p + "mlp.up_proj.weight": (ffn, h),
                       p + "mlp.down_proj.weight": (h, ffn),
                       p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)}
        return shapes

    # ---- hyperparameters, with LLaMA's defaults -------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return int(self.config["num_hidden_layers"])

    @property
    def n_head(self) -> int:
        """Attention heads."""
        return int(self.config["num_attention_heads"])

    @property
    def n_head_kv(self) -> int:
        """Key/value heads (fewer than ``n_head`` with grouped-query attention)."""
        return int(self.config.get("num_key_value_heads") or self.n_head)

    @property
    def hidden_size(self) -> int:
        """Embedding width."""
        return int(self.config["hidden_size"])

    @property
    def context_length(self) -> int:
        """Trained context length."""
        return int(self.config.get("max_position_embeddings") or 2048)

    @property
    def rope_theta(self) -> float:
        """RoPE base frequency (top-level in older configs, in rope_parameters in newer)."""
        params = rope_scaling(self.config)
        return float(self.config.get("rope_theta") or params.get("rope_theta") or 10000.0)

    @property
    def rms_norm_eps(self) -> float:
        """RMSNorm epsilon (1e-6 for LLaMA-1, 1e-5 for LLaMA-2: never assumed)."""
        return float(self.config.get("rms_norm_eps", 1e-6))

    @property
    def vocab_rows(self) -> int:
        """Rows of the token embedding: the GGUF vocab size."""
        return int(self.refs["model.embed_tokens.weight"].shape[0])

    @property
    def n_params(self) -> int:
        """Total parameter count."""
        return sum(ref.n_elements for ref in self.refs.values())
