"""``baize-convert verify``: a GGUF against its source, in llama.cpp and transformers.

Two checks: tokenization parity on a fixed set of strings (llama.cpp vs the sentencepiece
model Baize was trained with, and vs transformers' tokenizer.json), and logits on a Baize
prompt (llama.cpp vs transformers + peft ``merge_and_unload``). The verdict's bounds depend
on the file's quant type (see ``BOUNDS``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baize_convert import ConvertError, ConvertFailed
from baize_convert.hub import resolve_dir
from baize_convert.inspect_gguf import inspect_gguf

PARITY_STRINGS: tuple[str, ...] = (
    "", " ", "  ", "\n", "\n\n", "\t", "Hello world", " Hello world", "Hello  world   again",
    "1234567890 3.14159 2026-11-25", "def add(a, b):\n    return a + b\n", "x = [1, 2, 3]  # list",
    "   leading and trailing   ", "emoji 😀👍🏽 and symbols ©®™", "你好，世界。今天天气很好。",
    "\n[|Human|]Hi\n[|AI|]", "Ünïcödé ñ ß ж λ", "tabs\tand\nnewlines\r\n",
)

# Per file type: (max relative error of the last token's logits, min argmax agreement over
# positions, max NMSE). Measured on the random 256-wide test model (tests/test_convert.py), where
# quantization noise flips argmaxes far more often than on a trained model (whose logits are
# peaked): the quantized bounds catch a broken file (NMSE ~1, agreement ~chance), not a 1% drift.
BOUNDS: dict[str, tuple[float, float, float]] = {
    "F32": (1e-2, 0.97, 1e-4), "F16": (1e-2, 0.97, 1e-4), "BF16": (3e-2, 0.95, 1e-3),
    "Q8_0": (6e-2, 0.9, 3e-3), "Q6_K": (0.15, 0.75, 2e-2), "Q5_K_M": (0.25, 0.6, 6e-2),
    "Q4_K_M": (0.35, 0.5, 0.15), "Q4_0": (0.45, 0.35, 0.25),
}
DEFAULT_BOUNDS = (0.45, 0.35, 0.25)


@dataclass
class VerifyReport:
    """Everything ``verify`` measured, and the verdict."""

    model: str
    file_type: str
    n_strings: int = 0
    token_mismatches: list[dict] = field(default_factory=list)
    n_positions: int = 0
    max_rel_error: float = float("nan")
    argmax_agreement: float = float("nan")
    nmse: float = float("nan")
    bounds: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def tokens_ok(self) -> bool:
        """Every parity string tokenized identically."""
        return not self.token_mismatches

    @property
    def logits_ok(self) -> bool:
        """Logits within this file type's bounds."""
        rel, agree, max_nmse = self.bounds
        return (self.max_rel_error <= rel and self.argmax_agreement >= agree
                and self.nmse <= max_nmse)

    @property
    def ok(self) -> bool:
        """The verdict."""
        return self.tokens_ok and self.logits_ok


def relative_error(candidate: np.ndarray, reference: np.ndarray) -> float:
    """max |c - r| / max |r|."""
    return float(np.abs(candidate - reference).max() / max(np.abs(reference).max(), 1e-12))


def nmse(candidate: np.ndarray, reference: np.ndarray) -> float:
    """Mean squared error normalised by the reference's variance."""
    return float(np.mean((candidate - reference) ** 2) / max(np.var(reference), 1e-12))


def _require_train_extra() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise ConvertError(
            "verify compares against transformers: install pip install 'baize-tui[train]'"
        ) from None


def reference_tokenizers(hf_dir: Path) -> dict[str, Callable[[str], list[int]]]:
    """Callables str -> ids (with BOS) for sentencepiece and transformers, where available."""
    out: dict[str, Callable[[str], list[int]]] = {}
    if (hf_dir / "tokenizer.model").exists():
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(hf_dir / "tokenizer.model"))
        out["sentencepiece"] = lambda s: [sp.bos_id()] + sp.encode(s)
    if (hf_dir / "tokenizer.json").exists():
        from transformers import PreTrainedTokenizerFast

        from baize_convert.bpe import is_byte_level_bpe, read_tokenizer_json

        tok = PreTrainedTokenizerFast(tokenizer_file=str(hf_dir / "tokenizer.json"))
        if is_byte_level_bpe(read_tokenizer_json(hf_dir)):
            # The tokenizer's own post-processor decides BOS (Llama 3 adds it, SmolLM not).
            out["transformers"] = lambda s: tok(s, add_special_tokens=True)["input_ids"]
        else:
            bos = tok.convert_tokens_to_ids("<s>")
            out["transformers"] = lambda s: [bos] + tok(s, add_special_tokens=False)["input_ids"]
    if not out:
        raise ConvertError(f"{hf_dir}: no tokenizer.model or tokenizer.json to compare with")
    return out


def load_reference_model(hf_dir: Path, loras: list[Path]):
    """The HF model in float32 with each adapter merged by peft, in order."""
    import torch
    from transformers import LlamaForCausalLM

    model = _refusing_pickles(hf_dir, lambda: LlamaForCausalLM.from_pretrained(
        hf_dir, dtype=torch.float32))
    for lora in loras:
        from peft import PeftModel

        model = _refusing_pickles(lora, functools.partial(PeftModel.from_pretrained, model, lora))
        model = model.merge_and_unload()
    return model.eval()


def _refusing_pickles(where: Path, load: Callable[[], Any]) -> Any:
    """``load()``; a pickle that torch's weights-only loader refuses names the folder and file."""
    import pickle

    try:
        return load()
    except pickle.UnpicklingError as exc:
        names = sorted(p.name for p in Path(where).glob("*.bin")) or ["its weights"]
        raise ConvertFailed(f"{where}: refused to load {', '.join(names)}: a pickle that is not "
                            f"plain tensor data ({str(exc).splitlines()[0][:120]}); use "
                            ".safetensors weights from a source you trust") from None


def sample_prompt() -> str:
    """A Baize prompt with two past turns: the text whose logits are compared."""
    from baize_tui.prompt import render

    return render(None, [("What is a LoRA adapter?", "A small low-rank update to the weights."),
                         ("Show code.", "```python\nprint(42)\n```")],
                  "Thanks! 你好 🙂 Why does 2 + 2 = 4?")


def _load_llama(llama_cls, path: Path, **kwargs):
    try:
        return llama_cls(str(path), **kwargs)
    except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
        raise ConvertFailed(f"{path}: llama.cpp cannot load it ({exc})") from None


def verify_gguf(model_path: Path, hf: str, loras: list[str] | None = None,
                max_tokens: int = 256, lora_gguf: Path | None = None) -> VerifyReport:
    """Compare tokens and logits of ``model_path`` with the HF checkpoint (+ adapters)."""
    _require_train_extra()
    import torch
    from llama_cpp import Llama

    info = inspect_gguf(model_path)
    if info["type"] != "model" or info["architecture"] != "llama":
        raise ConvertError(
            f"{model_path}: a {info['architecture']} {info['type']} GGUF; verify checks LLaMA "
            "models (pass a GGUF adapter's base model instead)"
        )
    hf_dir = resolve_dir(hf, what="HF model")
    lora_dirs = [resolve_dir(spec, what="LoRA adapter") for spec in loras or []]
    report = VerifyReport(str(model_path), info["file_type"],
                          bounds=BOUNDS.get(info["file_type"], DEFAULT_BOUNDS))

    vocab_only = _load_llama(Llama, model_path, vocab_only=True, verbose=False)
    for name, encode in reference_tokenizers(hf_dir).items():
        for s in PARITY_STRINGS:
            ours = vocab_only.tokenize(s.encode(), add_bos=True, special=False)
            ref = encode(s)
            if ours != ref:
                report.token_mismatches.append({"reference": name, "text": s, "llama.cpp": ours,
                                                name: ref})
    report.n_strings = len(PARITY_STRINGS)
    del vocab_only

    n_ctx = min(int(info["context_length"] or 512), 2048)
    llm = _load_llama(Llama, model_path, logits_all=True, n_ctx=n_ctx, verbose=False,
                      lora_path=str(lora_gguf) if lora_gguf else None)
    tokens = llm.tokenize(sample_prompt().encode(), add_bos=True, special=False)
    tokens = tokens[: min(max_tokens, n_ctx)]
    llm.eval(tokens)
    ours = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    del llm
    ref_model = load_reference_model(hf_dir, lora_dirs)
    with torch.no_grad():
        ref = ref_model(torch.tensor([tokens])).logits[0].float().numpy()
    report.n_positions = len(tokens)
    report.max_rel_error = relative_error(ours[-1], ref[-1])
    report.argmax_agreement = float((ours.argmax(-1) == ref.argmax(-1)).mean())
    report.nmse = nmse(ours, ref)
    return report


def print_report(report: VerifyReport, *, as_json: bool = False) -> None:
    """Print the report and the verdict."""
    if as_json:
        data = asdict(report) | {"tokens_ok": report.tokens_ok, "logits_ok": report.logits_ok,
                                 "ok": report.ok}
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    rel, agree, max_nmse = report.bounds
    print(f"model            {report.model} ({report.file_type})")
    print(f"tokenization     {report.n_strings - len({m['text'] for m in report.token_mismatches})}"
          f"/{report.n_strings} strings identical")
    for m in report.token_mismatches[:5]:
        print(f"  differs from {m['reference']} on {m['text']!r}")
    print(f"logits           {report.n_positions} positions; max rel. error (last token) "
          f"{report.max_rel_error:.2e} (bound {rel:g}); argmax agreement "
          f"{report.argmax_agreement:.1%} (bound {agree:.0%}); NMSE {report.nmse:.2e} "
          f"(bound {max_nmse:g})")
    print(f"verdict          {'OK' if report.ok else 'MISMATCH'}")
