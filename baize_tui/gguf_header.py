"""Read a GGUF file's header (metadata and tensor table) fast, without loading weights.

One reader for the whole project: the model list, the chat engine's checks and
``baize-convert inspect`` all use it. Arrays (the vocabulary) are skipped in a tight loop and
reported by type and length, so a 150k-token vocabulary costs milliseconds, where
``gguf.GGUFReader`` builds an object per entry. Every way a file can be broken (cut download,
corrupt header, not a GGUF) raises :class:`GGUFHeaderError` with the reason.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCALAR_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                   10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# (block size, bytes per block) of every GGML tensor type in files llama.cpp writes.
_TYPE_SIZES: dict[int, tuple[int, int]] = {}


class GGUFHeaderError(ValueError):
    """The file is not a readable GGUF; the message says why."""


@dataclass(frozen=True)
class ArrayInfo:
    """An array value that was skipped: its item type and length."""

    item_type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table."""

    name: str
    shape: tuple[int, ...]  # ggml order (ne): innermost dimension first
    type_id: int
    offset: int  # relative to the start of the data section
    n_bytes: int

    @property
    def n_elements(self) -> int:
        """Number of values."""
        n = 1
        for dim in self.shape:
            n *= dim
        return n


@dataclass
class GGUFHeader:
    """What the header says."""

    path: Path
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    data_start: int = 0
    file_size: int = 0

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value; ``{arch}`` in the key is replaced by the architecture."""
        if "{arch}" in key:
            key = key.format(arch=self.metadata.get("general.architecture", ""))
        return self.metadata.get(key, default)

    @property
    def architecture(self) -> str | None:
        """``general.architecture``."""
        return self.metadata.get("general.architecture")

    @property
    def n_params(self) -> int:
        """Total values over all tensors."""
        return sum(t.n_elements for t in self.tensors)


def _type_sizes() -> dict[int, tuple[int, int]]:
    if not _TYPE_SIZES:
        import gguf

        _TYPE_SIZES.update({int(t): size for t, size in gguf.GGML_QUANT_SIZES.items()})
    return _TYPE_SIZES


MAX_ARRAY_DEPTH = 8  # arrays of arrays this deep; real files use one level


class _Cursor:
    def __init__(self, buf: Any, size: int) -> None:
        self.buf, self.size, self.pos = buf, size, 0

    def _need(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise GGUFHeaderError(f"truncated header (ends at byte {self.size})")

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        self._need(n)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        self._need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if depth > MAX_ARRAY_DEPTH:  # a crafted header must not exhaust the stack
            raise GGUFHeaderError(f"corrupt header (arrays nested more than {MAX_ARRAY_DEPTH} "
                                  f"deep at byte {self.pos})")
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if item_type in _SCALAR_FORMATS:
                nbytes = count * struct.calcsize(_SCALAR_FORMATS[item_type])
                self._need(nbytes)
                self.pos += nbytes
            elif item_type == _STRING:  # a vocabulary: skipped in a tight loop
                pos, buf, size, unpack = self.pos, self.buf, self.size, struct.unpack_from
                for _ in range(count):
                    if pos + 8 > size:
                        raise GGUFHeaderError(f"truncated header (ends at byte {size})")
                    pos += 8 + unpack("<Q", buf, pos)[0]
                if pos > size:
                    raise GGUFHeaderError(f"truncated header (ends at byte {size})")
                self.pos = pos
            else:
                for _ in range(count):
                    self.value(item_type, depth + 1)
            return ArrayInfo(item_type, count)
        raise GGUFHeaderError(f"corrupt header (unknown value type {vtype} at byte {self.pos})")


def _regular_file_size(path: Path) -> int:
    """The size of ``path``; :class:`GGUFHeaderError` unless it is a regular file (a FIFO
    would block the open forever)."""
    from baize_tui.safe_write import file_kind

    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise GGUFHeaderError("no such file") from None
    if path.is_dir():
        raise GGUFHeaderError("is a directory, not a .gguf file")
    kind = file_kind(path.resolve())
    if kind is not None:
        raise GGUFHeaderError(f"is {kind}, not a regular file")
    return size


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of ``path`` and check every tensor's data lies inside the file."""
    size = _regular_file_size(path)
    if size == 0:
        raise GGUFHeaderError("empty file")
    sizes = _type_sizes()
    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise GGUFHeaderError("not a GGUF file (wrong magic bytes)")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            cur = _Cursor(mm, size)
            cur.pos = 4
            version = cur.unpack("<I")
            if version == 1:
                raise GGUFHeaderError("GGUF v1 (2023) no longer loads in llama.cpp; convert it again")
            if version not in (2, 3):
                raise GGUFHeaderError(f"unsupported GGUF version {version} (big-endian or corrupt)")
            n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
            if n_tensors > 10_000_000 or n_kv > 1_000_000:
                raise GGUFHeaderError("corrupt header (absurd tensor or key count)")
            header = GGUFHeader(path, version, file_size=size)
            for _ in range(n_kv):
                key = cur.string()
                header.metadata[key] = cur.value(cur.unpack("<I"))
            for _ in range(n_tensors):
                name = cur.string()
                n_dims = cur.unpack("<I")
                if n_dims > 8:
                    raise GGUFHeaderError(f"corrupt tensor info for {name!r} ({n_dims} dims)")
                shape = tuple(cur.unpack("<Q") for _ in range(n_dims))
                type_id, offset = cur.unpack("<I"), cur.unpack("<Q")
                if type_id not in sizes:
                    raise GGUFHeaderError(f"tensor {name!r} has unknown type {type_id}")
                block, type_size = sizes[type_id]
                n = 1
                for dim in shape:
                    n *= dim
                header.tensors.append(TensorInfo(name, shape, type_id, offset, n // block * type_size))
            alignment = int(header.metadata.get("general.alignment") or 32)
            if alignment <= 0 or alignment & (alignment - 1):
                raise GGUFHeaderError(f"corrupt header (alignment {alignment})")
            header.data_start = -(-cur.pos // alignment) * alignment
    end = max((header.data_start + t.offset + t.n_bytes for t in header.tensors), default=cur.pos)
    if end > size:
        raise GGUFHeaderError(
            f"truncated: {size:,} of {end:,} bytes present ({100 * size // end}%); "
            "delete it and download or convert it again"
        )
    return header


def file_type_label(value: int | None) -> str:
    """``general.file_type`` as llama.cpp names it, e.g. 15 -> 'Q4_K_M'."""
    if value is None:
        return "unknown"
    import gguf

    try:
        name = gguf.LlamaFileType(int(value)).name
    except ValueError:
        return f"unknown ({value})"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def type_name(type_id: int) -> str:
    """A GGML tensor type id as a name, e.g. 12 -> 'Q4_K'."""
    import gguf

    try:
        return gguf.GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type {type_id}"
