"""Write the merged model as Hugging Face safetensors shards, one tensor at a time.

Every header is computed up front from the plan, so each shard is written sequentially
without holding more than the current tensor in memory.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from baize_convert.checkpoint import Checkpoint

SHARD_BYTES = 2 * 1024**3
_ST_TYPES = {"F32": (np.float32, 4), "F16": (np.float16, 2), "BF16": (np.uint16, 2)}
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "generation_config.json")


def _to_bf16(w: np.ndarray) -> np.ndarray:
    bits = w.astype(np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)  # round to nearest even
    return (rounded >> 16).astype(np.uint16)


class HFShardWriter:
    """Streams tensors (given in a fixed order) into ``model-0000i-of-0000n.safetensors``."""

    def __init__(self, directory: Path, ckpt: Checkpoint, order: list[str], *,
                 shard_bytes: int = SHARD_BYTES) -> None:
        self.directory = directory
        self.ckpt = ckpt
        directory.mkdir(parents=True, exist_ok=True)
        shards: list[list[str]] = [[]]
        size = 0
        for name in order:
            nbytes = self._nbytes(name)
            if shards[-1] and size + nbytes > shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(name)
            size += nbytes
        n = len(shards)
        self.files = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        self.shard_of = {name: i for i, names in enumerate(shards) for name in names}
        self.shards = shards
        self._open: tuple[int, BinaryIO] | None = None
        self.total = sum(self._nbytes(name) for name in order)

    def _dtype(self, name: str) -> str:
        dtype = self.ckpt.refs[name].dtype
        return dtype if dtype in _ST_TYPES else "F32"

    def _nbytes(self, name: str) -> int:
        return self.ckpt.refs[name].n_elements * _ST_TYPES[self._dtype(name)][1]

    def _start_shard(self, index: int) -> BinaryIO:
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for name in self.shards[index]:
            nbytes = self._nbytes(name)
            header[name] = {"dtype": self._dtype(name), "shape": list(self.ckpt.refs[name].shape),
                            "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        fh = (self.directory / self.files[index]).open("wb")
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        return fh

    def write(self, name: str, w: np.ndarray) -> None:
        """Append one merged float32 tensor (in HF layout) to its shard."""
        index = self.shard_of[name]
        if self._open is None or self._open[0] != index:
            if self._open is not None:
                self._open[1].close()
            self._open = (index, self._start_shard(index))
        dtype = self._dtype(name)
        data = _to_bf16(w) if dtype == "BF16" else w.astype(_ST_TYPES[dtype][0], copy=False)
        self._open[1].write(np.ascontiguousarray(data).tobytes())

    def finish(self, bos_id: int, eos_id: int) -> None:
        """Close the last shard and write the index, config (with the tokenizer's special ids)
        and tokenizer files."""
        if self._open is not None:
            self._open[1].close()
            self._open = None
        index = {"metadata": {"total_size": self.total},
                 "weight_map": {name: self.files[i] for name, i in self.shard_of.items()}}
        (self.directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config = dict(self.ckpt.config)
        if config.get("architectures") in (None, [], ["LLaMAForCausalLM"]):
            config["architectures"] = ["LlamaForCausalLM"]  # the decapoda spelling, fixed
        # The tokenizer's ids, not decapoda-era config values (BAIZE.md §2).
        config.update(bos_token_id=bos_id, eos_token_id=eos_id)
        if config.get("pad_token_id", 0) is not None and config.get("pad_token_id", 0) < 0:
            config["pad_token_id"] = None
        (self.directory / "config.json").write_text(json.dumps(config, indent=2))
        for fname in TOKENIZER_FILES:
            src = self.ckpt.directory / fname
            if src.exists():
                shutil.copy2(src, self.directory / fname)

    def abort(self) -> None:
        """Close any open shard (the caller removes the directory)."""
        if self._open is not None:
            self._open[1].close()
            self._open = None
