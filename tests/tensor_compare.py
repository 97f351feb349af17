"""Compare two converter outputs tensor by tensor, within what floating-point rounding allows.

Two runs that compute the same merge in a different order (row blocks vs the whole matrix)
may round differently: OpenBLAS picks its kernel by block size, so ``B[a:b] @ A`` is not
bit-identical to ``(B @ A)[a:b]``. Rounding moves a value by a few ulps of float32, and a
quantized value by at most one step of its block. A wrong block (rows shifted, swapped, taken
from another tensor) moves most values by about their own size, which these tolerances
catch; metadata, names, shapes and types must still be identical.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Largest difference allowed, as a fraction of the tensor's largest magnitude, per type.
#: float32: a few ulps of rounding; float16/bfloat16: one ulp; Q8_0: 1.5 quantization steps
#: (a value on a rounding boundary flips by one step, the block scale is rounded to f16).
REL_TOLERANCE = {"F32": 1e-5, "F16": 2.0**-9, "BF16": 2.0**-6, "Q8_0": 1.5 / 127}
#: In a quantized tensor at most this fraction of values may differ at all: only values on a
#: rounding boundary flip. (In float tensors any value may move by an ulp.)
MAX_CHANGED_FRACTION = 0.02


def assert_close(name: str, kind: str, a: np.ndarray, b: np.ndarray) -> None:
    """Fail unless ``a`` and ``b`` agree within rounding for a tensor of type ``kind``."""
    assert a.shape == b.shape, f"{name}: shape {a.shape} != {b.shape}"
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    scale = max(float(np.max(np.abs(a64), initial=0.0)), 1e-30)
    diff = np.abs(a64 - b64)
    worst = float(np.max(diff, initial=0.0))
    assert worst <= REL_TOLERANCE[kind] * scale, (
        f"{name} ({kind}): differs by {worst:.3g}, more than rounding allows "
        f"({REL_TOLERANCE[kind] * scale:.3g})")
    if kind.startswith(("F", "BF")):
        return
    changed = float(np.count_nonzero(diff)) / max(diff.size, 1)
    assert changed <= MAX_CHANGED_FRACTION, (
        f"{name} ({kind}): {changed:.1%} of values differ; rounding changes only a few")


def gguf_contents(path: Path) -> tuple[dict[str, object], dict[str, tuple[str, np.ndarray]]]:
    """A GGUF's key/values and its tensors (type name, dequantized values), by name."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("GGUF.")}
    tensors = {t.name: (t.tensor_type.name, dequantize(t.data, t.tensor_type))
               for t in reader.tensors}
    return fields, tensors


def assert_same_gguf(a: Path, b: Path) -> None:
    """Same metadata and tensor list; tensor values equal within rounding."""
    fields_a, tensors_a = gguf_contents(a)
    fields_b, tensors_b = gguf_contents(b)
    assert fields_a == fields_b
    assert list(tensors_a) == list(tensors_b)
    for name, (kind, values) in tensors_a.items():
        kind_b, values_b = tensors_b[name]
        assert kind == kind_b, f"{name}: type {kind} != {kind_b}"
        assert_close(name, kind, values, values_b)


def assert_same_safetensors(a: Path, b: Path) -> None:
    """Same tensor names, dtypes and metadata; values equal within rounding."""
    from safetensors import safe_open

    with safe_open(str(a), "np") as fa, safe_open(str(b), "np") as fb:
        assert fa.metadata() == fb.metadata()
        assert list(fa.keys()) == list(fb.keys())
        for name in fa.keys():
            va, vb = fa.get_tensor(name), fb.get_tensor(name)
            assert va.dtype == vb.dtype, f"{name}: dtype {va.dtype} != {vb.dtype}"
            kind = {"float32": "F32", "float16": "F16"}.get(str(va.dtype), "F32")
            assert_close(name, kind, va, vb)
