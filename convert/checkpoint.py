"""Lazy reader for Hugging Face LLaMA checkpoints: safetensors or pickled ``.bin``, single or sharded.

Nothing is loaded up front: safetensors files are memory-mapped and parsed from their header;
``.bin`` shards go through ``torch.load(mmap=True, weights_only=True)``. ``load(name)`` returns
one tensor as a fresh float32 array, so peak memory stays near the largest tensor.
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

LLAMA_ARCHITECTURES = {"LlamaForCausalLM", "LLaMAForCausalLM"}
# Buffers some old checkpoints carry that are not weights (BAIZE.md §2).
SKIPPED_SUFFIXES = (".rotary_emb.inv_freq", ".attention.masked_bias", ".attention.bias")

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


def _bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    """A memory-mapped safetensors file, parsed without the safetensors library."""

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
        self._map: np.memmap | None = None

    def refs(self) -> Iterator[TensorRef]:
        """Every tensor in the file."""
        for name, info in self.header.items():
            yield TensorRef(name, self.path, info["dtype"], tuple(info["shape"]))

    def raw(self, name: str) -> np.ndarray:
        """The stored array (a view into the map, in its stored dtype; BF16 as uint16)."""
        info = self.header[name]
        dtype = _ST_DTYPES.get(info["dtype"])
        if dtype is None:
            raise ConvertError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
        if self._map is None:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = info["data_offsets"]
        buf = self._map[self.data_start + begin:self.data_start + end]
        return buf.view(dtype).reshape(info["shape"])

    def load(self, name: str) -> np.ndarray:
        """One tensor as a new float32 array."""
        raw = self.raw(name)
        if self.header[name]["dtype"] == "BF16":
            return _bf16_to_f32(raw)
        return np.array(raw, dtype=np.float32)


class TorchBinFile:
    """A pickled PyTorch shard, opened lazily with ``torch.load(mmap=True, weights_only=True)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            import torch
        except ImportError:
            raise ConvertError(
                f"{path}: reading PyTorch .bin checkpoints needs torch; "
                "install it with pip install 'baize-tui[train]'"
            ) from None
        try:
            self.state = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise ConvertError(f"{path}: cannot read this PyTorch file ({exc})") from None
            # Pre-zipfile pickles cannot be mmapped; they are loaded whole (shards are small).
            self.state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt files
            raise ConvertError(
                f"{path}: corrupt or truncated PyTorch file ({type(exc).__name__}: {exc}); "
                "re-download it"
            ) from None
        if not isinstance(self.state, dict):
            raise ConvertError(f"{path}: expected a state dict, found {type(self.state).__name__}")

    def refs(self) -> Iterator[TensorRef]:
        """Every tensor in the file."""
        for name, tensor in self.state.items():
            dtype = str(tensor.dtype).removeprefix("torch.")
            label = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(dtype, dtype)
            yield TensorRef(name, self.path, label, tuple(tensor.shape))

    def load(self, name: str) -> np.ndarray:
        """One tensor as a new float32 array."""
        return self.state[name].float().numpy().copy()


def open_tensor_file(path: Path) -> SafetensorsFile | TorchBinFile:
    """Open a weights file by its extension."""
    if not path.exists():
        raise ConvertError(f"{path}: missing (listed in the index but not on disk)")
    if path.suffix == ".safetensors":
        return SafetensorsFile(path)
    if path.suffix in (".bin", ".pt", ".pth"):
        return TorchBinFile(path)
    raise ConvertError(f"{path}: unknown weights format (expected .safetensors or .bin)")


def _weight_files(directory: Path) -> list[Path]:
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = directory / index_name
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as exc:
                raise ConvertError(f"{index}: not a valid shard index ({exc})") from None
            files = sorted(set(weight_map.values()))
            missing = [f for f in files if not (directory / f).exists()]
            if missing:
                raise ConvertError(
                    f"{directory}: shard(s) {', '.join(missing)} listed in {index_name} are "
                    "missing; download the complete checkpoint"
                )
            return [directory / f for f in files]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (directory / single).exists():
            return [directory / single]
    found = sorted(directory.glob("*.safetensors"))
    if found:
        return found
    raise ConvertError(
        f"{directory}: no model weights found (expected model.safetensors, "
        "pytorch_model.bin or a sharded index)"
    )


@dataclass
class Checkpoint:
    """A LLaMA checkpoint directory: its config and a lazy view of its tensors."""

    directory: Path
    config: dict[str, Any]
    refs: dict[str, TensorRef] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    _files: dict[Path, SafetensorsFile | TorchBinFile] = field(default_factory=dict)

    @classmethod
    def open(cls, directory: Path) -> Checkpoint:
        """Read ``config.json``, check it is LLaMA, and index every tensor."""
        config_path = directory / "config.json"
        if not config_path.exists():
            raise ConvertError(f"{directory}: no config.json; is this a Hugging Face model directory?")
        try:
            config = json.loads(config_path.read_text())
        except ValueError as exc:
            raise ConvertError(f"{config_path}: not valid JSON ({exc})") from None
        archs = config.get("architectures") or []
        if config.get("model_type", "llama").lower() != "llama" or (
            archs and not set(archs) & LLAMA_ARCHITECTURES
        ):
            raise ConvertError(
                f"{config_path}: architecture {archs or config.get('model_type')} is not LLaMA; "
                "baize-convert handles LlamaForCausalLM checkpoints only"
            )
        ckpt = cls(directory, config)
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
        return ckpt

    def load(self, name: str) -> np.ndarray:
        """One tensor as a new float32 array."""
        ref = self.refs[name]
        return self._files[ref.file].load(name)

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
        params = self.config.get("rope_parameters") or {}
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
