"""Read a GGUF file's header (metadata and tensor table) fast, without loading weights.

One reader for the whole project: the model list, the chat engine's checks and
``baize-convert inspect`` all use it, through one typed description (:class:`GGUFInfo`, from
:meth:`GGUFHeader.info`) whose keys and value types are gguf-py's own (``gguf.Keys``,
``gguf.GGUFValueType``), not re-typed strings and numbers. Arrays (the vocabulary) are skipped in a tight loop and
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

# gguf-py's GGUFValueType -> struct format of a scalar value (filled on first use: importing
# gguf costs a quarter of a second, which the app's start-up does not pay).
_SCALAR_FORMATS: dict[int, str] = {}
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

    @property
    def data_end(self) -> int:
        """The byte where the last tensor's data ends."""
        return max((self.data_start + t.offset + t.n_bytes for t in self.tensors),
                   default=self.data_start)

    def info(self) -> GGUFInfo:
        """The typed description of this file (see :class:`GGUFInfo`)."""
        from collections import Counter

        from gguf import Keys

        def number(key: str) -> int | None:
            value = self.get(key)
            return int(value) if isinstance(value, (int, float)) else None

        def text(key: str) -> str | None:
            value = self.get(key)
            return value if isinstance(value, str) else None

        def flag(key: str) -> bool | None:
            value = self.get(key)
            return value if isinstance(value, bool) else None

        matrices = Counter(t.type_id for t in self.tensors if len(t.shape) >= 2)
        tokens = self.get(Keys.Tokenizer.LIST)
        alpha = self.get(Keys.Adapter.LORA_ALPHA)
        return GGUFInfo(
            path=self.path, version=self.version, architecture=self.architecture,
            kind=text(Keys.General.TYPE) or "model", name=text(Keys.General.NAME),
            file_type=number(Keys.General.FILE_TYPE),
            main_tensor_type=matrices.most_common(1)[0][0] if matrices else None,
            context_length=number(Keys.LLM.CONTEXT_LENGTH) if self.architecture else None,
            embedding_length=number(Keys.LLM.EMBEDDING_LENGTH),
            block_count=number(Keys.LLM.BLOCK_COUNT),
            head_count=number(Keys.Attention.HEAD_COUNT),
            head_count_kv=number(Keys.Attention.HEAD_COUNT_KV),
            vocab_size=tokens.count if isinstance(tokens, ArrayInfo) else None,
            bos_token_id=number(Keys.Tokenizer.BOS_ID), eos_token_id=number(Keys.Tokenizer.EOS_ID),
            add_bos_token=flag(Keys.Tokenizer.ADD_BOS), add_eos_token=flag(Keys.Tokenizer.ADD_EOS),
            chat_template=text(Keys.Tokenizer.CHAT_TEMPLATE),
            adapter_type=text(Keys.Adapter.TYPE),
            lora_alpha=float(alpha) if isinstance(alpha, (int, float)) else None,
            tensor_types=dict(sorted(Counter(type_name(t.type_id) for t in self.tensors).items())),
            n_tensors=len(self.tensors), n_params=self.n_params, file_size=self.file_size,
            data_end=self.data_end,
        )


@dataclass(frozen=True)
class GGUFInfo:
    """What the project needs to know about one GGUF, typed: the model list, the chat engine
    and ``baize-convert inspect`` all describe a file from this. A missing or mistyped key
    is None."""

    path: Path
    version: int
    architecture: str | None
    kind: str  # general.type: "model" or "adapter"
    name: str | None
    file_type: int | None  # general.file_type (a gguf.LlamaFileType value)
    main_tensor_type: int | None  # the GGML type most matrices have
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    bos_token_id: int | None
    eos_token_id: int | None
    add_bos_token: bool | None
    add_eos_token: bool | None
    chat_template: str | None
    adapter_type: str | None
    lora_alpha: float | None
    tensor_types: dict[str, int]  # GGML type name -> number of tensors
    n_tensors: int
    n_params: int
    file_size: int
    data_end: int

    @property
    def quant_label(self) -> str:
        """The quantization as llama.cpp names it (from file_type, else the main tensor type)."""
        if self.file_type is not None:
            return file_type_label(self.file_type)
        if self.main_tensor_type is not None:
            return type_name(self.main_tensor_type)
        return "unknown"


def _scalar_formats() -> dict[int, str]:
    if not _SCALAR_FORMATS:
        from gguf import GGUFValueType as T

        _SCALAR_FORMATS.update({
            T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I",
            T.INT32: "<i", T.FLOAT32: "<f", T.BOOL: "<?", T.UINT64: "<Q", T.INT64: "<q",
            T.FLOAT64: "<d"})
    return _SCALAR_FORMATS


def _type_sizes() -> dict[int, tuple[int, int]]:
    if not _TYPE_SIZES:
        import gguf

        _TYPE_SIZES.update({int(t): size for t, size in gguf.GGML_QUANT_SIZES.items()})
    return _TYPE_SIZES


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

    def value(self, vtype: int) -> Any:
        from gguf import GGUFValueType

        formats = _scalar_formats()
        if vtype in formats:
            return self.unpack(formats[vtype])
        if vtype == GGUFValueType.STRING:
            return self.string()
        if vtype == GGUFValueType.ARRAY:
            item_type, count = self.unpack("<I"), self.unpack("<Q")
            if item_type in formats:
                nbytes = count * struct.calcsize(formats[item_type])
                self._need(nbytes)
                self.pos += nbytes
            elif item_type == GGUFValueType.STRING:  # a vocabulary: skipped in a tight loop
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
                    self.value(item_type)
            return ArrayInfo(item_type, count)
        raise GGUFHeaderError(f"corrupt header (unknown value type {vtype} at byte {self.pos})")


def read_header(path: Path) -> GGUFHeader:
    """Parse the header of ``path`` and check every tensor's data lies inside the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise GGUFHeaderError("no such file") from None
    if path.is_dir():
        raise GGUFHeaderError("is a directory, not a .gguf file")
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
