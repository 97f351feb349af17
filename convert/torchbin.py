"""Read PyTorch ``torch.save`` zip checkpoints without torch.

Baize's adapters (``adapter_model.bin``) and decapoda-era shards are zip archives holding a
pickle (``data.pkl``) and one uncompressed file per storage. The pickle is read with an
allow-list of globals (tensor rebuild, typed storages, OrderedDict) — never arbitrary
classes — and tensors stay on disk until read, with positioned reads of just their bytes.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from baize_convert import ConvertError
from baize_convert.rawio import pread_into

_STORAGE_DTYPES: dict[str, tuple[str, np.dtype]] = {
    "FloatStorage": ("F32", np.dtype("<f4")),
    "HalfStorage": ("F16", np.dtype("<f2")),
    "BFloat16Storage": ("BF16", np.dtype("<u2")),
    "DoubleStorage": ("F64", np.dtype("<f8")),
}


@dataclass(frozen=True)
class _StorageType:
    label: str
    dtype: np.dtype


@dataclass(frozen=True)
class _Storage:
    label: str
    dtype: np.dtype
    offset: int  # byte offset of the storage's data in the file


@dataclass(frozen=True)
class LazyTensor:
    """A tensor described by the pickle; its data is read on demand."""

    label: str  # "F32", "F16", "BF16", "F64"
    dtype: np.dtype
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int  # byte offset of element 0 in the file

    @property
    def contiguous(self) -> bool:
        """Row-major without gaps, so rows can be read as one span."""
        expected, step = [], 1
        for dim in reversed(self.shape):
            expected.append(step)
            step *= dim
        return tuple(reversed(expected)) == tuple(self.stride) or 0 in self.shape


def _rebuild_tensor_v2(storage: _Storage, storage_offset: int, size: tuple, stride: tuple,
                       *_args: Any) -> LazyTensor:
    return LazyTensor(storage.label, storage.dtype, tuple(size), tuple(stride),
                      storage.offset + storage_offset * storage.dtype.itemsize)


def _rebuild_parameter(data: LazyTensor, *_args: Any) -> LazyTensor:
    return data


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(label, dtype) for name, (label, dtype) in _STORAGE_DTYPES.items()},
}


def _data_offset(fh, info: zipfile.ZipInfo) -> int:
    fh.seek(info.header_offset)
    header = fh.read(30)
    if header[:4] != b"PK\x03\x04":
        raise ValueError(f"bad local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def load_state_dict(path: Path) -> dict[str, LazyTensor]:
    """The tensors of a ``torch.save`` zip checkpoint, without reading their data."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ConvertError(
            f"{path}: corrupt or truncated PyTorch file (not a zip archive; legacy pre-1.6 "
            "pickles are not supported); re-download it"
        ) from None
    with archive, path.open("rb") as fh:
        infos = {info.filename: info for info in archive.infolist()}
        pkl_name = next((n for n in infos if n.endswith("data.pkl")), None)
        if pkl_name is None:
            raise ConvertError(f"{path}: no data.pkl inside; not a PyTorch checkpoint")
        prefix = pkl_name[: -len("data.pkl")]

        def persistent_load(pid: tuple) -> _Storage:
            if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
                raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
            storage_type, key = pid[1], pid[2]
            if not isinstance(storage_type, _StorageType):
                raise pickle.UnpicklingError(f"unsupported storage {storage_type!r}")
            info = infos.get(f"{prefix}data/{key}")
            if info is None or info.compress_type != zipfile.ZIP_STORED:
                raise pickle.UnpicklingError(f"storage {key} missing or compressed")
            return _Storage(storage_type.label, storage_type.dtype, _data_offset(fh, info))

        class Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                try:
                    return _ALLOWED[(module, name)]
                except KeyError:
                    raise pickle.UnpicklingError(
                        f"refusing to load {module}.{name}: only tensors are allowed"
                    ) from None

        unpickler = Restricted(archive.open(pkl_name))
        unpickler.persistent_load = persistent_load  # type: ignore[method-assign]  # pickle's hook
        try:
            state = unpickler.load()
        except (pickle.UnpicklingError, EOFError, ValueError, struct.error, zipfile.BadZipFile,
                KeyError, TypeError) as exc:
            raise ConvertError(f"{path}: corrupt or unsupported PyTorch file ({exc})") from None
    if not isinstance(state, dict) or not all(isinstance(v, LazyTensor) for v in state.values()):
        raise ConvertError(f"{path}: expected a state dict of tensors")
    size = path.stat().st_size
    for name, tensor in state.items():
        n = int(np.prod(tensor.shape)) if tensor.shape else 1
        if tensor.offset + n * tensor.dtype.itemsize > size:
            raise ConvertError(f"{path}: truncated (tensor {name} ends past the end of the file)")
    return dict(state)


def read_rows(path: Path, tensor: LazyTensor, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows ``start:stop`` of a tensor (all of it by default) as a new array in its dtype."""
    rows = tensor.shape[0] if tensor.shape else 1
    stop = rows if stop is None else stop
    row_elems = int(np.prod(tensor.shape[1:])) if len(tensor.shape) > 1 else 1
    itemsize = tensor.dtype.itemsize
    if tensor.contiguous:
        count = (stop - start) * row_elems
        out = np.empty(count, dtype=tensor.dtype)
        pread_into(path, out, tensor.offset + start * row_elems * itemsize)
        return out.reshape((stop - start, *tensor.shape[1:]) if tensor.shape else ())
    # Strided (rare in state dicts): read the whole span, then view with the strides.
    span = 1 + sum((d - 1) * s for d, s in zip(tensor.shape, tensor.stride, strict=True))
    flat = np.empty(span, dtype=tensor.dtype)
    pread_into(path, flat, tensor.offset)
    view = np.lib.stride_tricks.as_strided(flat, tensor.shape,
                                           [s * itemsize for s in tensor.stride])
    return np.array(view[start:stop])
