"""Output types: which tensor gets which GGML type, and K-quants through llama.cpp.

Types numpy can produce (F32, F16, BF16, Q8_0, Q4_0) are written in the single streaming
pass. K-quant mixes (Q4_K_M, Q5_K_M, Q6_K) are made by llama.cpp's own quantizer from a
temporary F16 GGUF, exactly as ``llama-quantize`` would.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import gguf
from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as F

from baize_convert import ConvertError, ConvertFailed


@dataclass(frozen=True)
class QuantType:
    """One ``--quantize`` choice."""

    name: str  # canonical lower-case name, e.g. "q4_k_m"
    label: str  # as in file names and llama.cpp, e.g. "Q4_K_M"
    file_type: F  # general.file_type of the final file
    base_type: T  # the main tensor type
    via_llama: bool  # made by llama.cpp's quantizer from a temporary F16 file
    bits_per_weight: float  # for disk estimates

    def tensor_type(self, gguf_name: str, shape: tuple[int, ...]) -> T:
        """The GGML type of one tensor in the single-pass (numpy) writer.

        1-D tensors and norms stay F32 (as in llama.cpp's converter); a row width that does
        not divide into the block size falls back to F16.
        """
        if len(shape) == 1 or gguf_name.endswith("_norm.weight"):
            return T.F32
        base = T.F16 if self.via_llama else self.base_type
        if base == T.Q4_0 and gguf_name == "output.weight":
            base = T.Q8_0  # numpy cannot make llama-quantize's Q6_K output; Q8_0 is the safe step up
        block, _ = gguf.GGML_QUANT_SIZES[base]
        if shape[-1] % block:
            return T.F16
        return base


QUANT_TYPES: dict[str, QuantType] = {
    q.name: q
    for q in (
        QuantType("f32", "F32", F.ALL_F32, T.F32, False, 32.0),
        QuantType("f16", "F16", F.MOSTLY_F16, T.F16, False, 16.0),
        QuantType("bf16", "BF16", F.MOSTLY_BF16, T.BF16, False, 16.0),
        QuantType("q8_0", "Q8_0", F.MOSTLY_Q8_0, T.Q8_0, False, 8.5),
        QuantType("q4_0", "Q4_0", F.MOSTLY_Q4_0, T.Q4_0, False, 4.6),
        QuantType("q4_k_m", "Q4_K_M", F.MOSTLY_Q4_K_M, T.Q4_K, True, 4.9),
        QuantType("q5_k_m", "Q5_K_M", F.MOSTLY_Q5_K_M, T.Q5_K, True, 5.7),
        QuantType("q6_k", "Q6_K", F.MOSTLY_Q6_K, T.Q6_K, True, 6.6),
    )
}
ALIASES = {"q4": "q4_k_m", "q5": "q5_k_m", "q8": "q8_0"}


def parse_quant(name: str) -> QuantType:
    """Look up a ``--quantize`` value (case-insensitive, aliases allowed)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in QUANT_TYPES:
        valid = ", ".join(list(QUANT_TYPES) + [f"{a} (= {t})" for a, t in ALIASES.items()])
        raise ConvertError(f"unknown quant type {name!r}; choose one of: {valid}")
    return QUANT_TYPES[key]


def tensor_nbytes(shape: tuple[int, ...], qtype: T) -> int:
    """Bytes a tensor of this shape takes in this GGML type."""
    block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    n = 1
    for dim in shape:
        n *= dim
    return n // block * type_size


def llama_quantize(src: Path, dst: Path, qt: QuantType, threads: int | None = None) -> None:
    """Quantize an F16 GGUF into ``dst`` with llama.cpp's quantizer.

    It runs in a child process: the C call cannot be interrupted, and a child can be killed
    on Ctrl-C so nothing keeps writing after the temporary files are removed.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        raise ConvertError(
            f"{qt.label} needs llama.cpp's quantizer (pip install llama-cpp-python); "
            "q8_0 and q4_0 work without it"
        )
    cmd = [sys.executable, "-m", "baize_convert.quantize", str(src), str(dst),
           str(int(qt.file_type)), str(threads or os.cpu_count() or 0)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if proc.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-3:])
        raise ConvertFailed(f"llama.cpp could not quantize {src} to {qt.label}: {tail}")


def _quantize_main(argv: list[str]) -> int:
    """Child process entry: ``python -m baize_convert.quantize SRC DST FTYPE THREADS``."""
    import llama_cpp

    src, dst, ftype, threads = argv
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)  # one log line per tensor otherwise
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(threads)
    code = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if code != 0:
        print(f"llama_model_quantize returned {code}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(_quantize_main(sys.argv[1:]))
