"""Positioned reads of tensor bytes.

Tensors are read with ``preadv`` into a fresh array instead of through a long-lived memory
map: pages touched through a map stay counted in the process's resident memory until it is
unmapped, so a streaming converter that mmaps a 13 GB checkpoint ends up "using" 13 GB.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from baize_convert import ConvertError


def pread_into(path: Path, out: np.ndarray, offset: int) -> None:
    """Fill ``out`` (contiguous) with the bytes of ``path`` starting at ``offset``."""
    buf = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]  # numpy stubs
    fd = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < len(buf):
            n = os.preadv(fd, [buf[done:]], offset + done)
            if n <= 0:
                raise ConvertError(f"{path}: unexpected end of file; re-download it")
            done += n
    finally:
        os.close(fd)


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (as uint16) to float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def to_f32(raw: np.ndarray, label: str) -> np.ndarray:
    """A stored array (BF16 as uint16) as float32, always a new array."""
    if label == "BF16":
        return bf16_to_f32(raw)
    return raw.astype(np.float32, copy=raw.dtype == np.float32)
