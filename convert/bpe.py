"""Hugging Face byte-level BPE tokenizers (``tokenizer.json``, GPT-2-style merges) for llama.cpp.

llama.cpp's ``gpt2`` tokenizer needs the byte-level token strings, the merges, a token type
per id and the *name* of the pre-tokenizer (the regex that splits text before BPE), which it
knows only by name. The name is found from the ``pre_tokenizer`` (and ``normalizer``) of
``tokenizer.json``, compared field by field with the ones llama.cpp implements; anything
else is refused with its description rather than guessed, because a wrong name tokenizes
differently without any error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from baize_convert import ConvertError

# Llama 3's split regex (HF spelling, case-insensitive contractions).
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(use_regex: bool) -> dict[str, Any]:
    return {"type": "ByteLevel", "add_prefix_space": False, "use_regex": use_regex}


# llama.cpp's pre-tokenizer name -> the HF pre_tokenizer steps it implements (the fields that
# change how text is split; trim_offsets only affects offsets and is ignored).
KNOWN_PRE_TOKENIZERS: dict[str, list[dict[str, Any]]] = {
    "llama-bpe": [{"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated",
                   "invert": False}, _byte_level(False)],
    "smollm": [{"type": "Digits", "individual_digits": True}, _byte_level(True)],
    "gpt2": [_byte_level(True)],
}
_IGNORED_FIELDS = {"trim_offsets"}


def _steps(pre: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not pre:
        return []
    if pre.get("type") == "Sequence":
        out: list[dict[str, Any]] = []
        for step in pre.get("pretokenizers") or []:
            out.extend(_steps(step))
        return out
    return [{k: v for k, v in pre.items() if k not in _IGNORED_FIELDS}]


def describe(pre: dict[str, Any] | None) -> str:
    """A short human description of a pre-tokenizer, for error messages."""
    parts = []
    for step in _steps(pre):
        fields = ", ".join(f"{k}={v!r}" for k, v in step.items() if k != "type")
        parts.append(f"{step.get('type')}({fields})")
    return " + ".join(parts) or "none"


def detect_pre_tokenizer(data: dict[str, Any], path: Path) -> str:
    """The llama.cpp pre-tokenizer name for ``tokenizer.json`` ``data``, or a clear refusal."""
    if data.get("normalizer"):
        raise ConvertError(
            f"{path}: byte-level BPE with a normalizer ({data['normalizer'].get('type')}) is not "
            "a tokenizer llama.cpp's LLaMA loader reproduces; not converting it"
        )
    steps = _steps(data.get("pre_tokenizer"))
    for name, known in KNOWN_PRE_TOKENIZERS.items():
        if steps == known:
            return name
    raise ConvertError(
        f"{path}: unknown BPE pre-tokenizer {describe(data.get('pre_tokenizer'))}; llama.cpp "
        f"knows it only by name and baize-convert recognises {', '.join(KNOWN_PRE_TOKENIZERS)} "
        "(Llama 3, SmolLM, GPT-2); refusing to guess"
    )


def is_byte_level_bpe(data: dict[str, Any]) -> bool:
    """Whether ``tokenizer.json`` data is a GPT-2-style byte-level BPE."""
    model = data.get("model") or {}
    decoder = data.get("decoder") or {}
    decoders = decoder.get("decoders", [decoder]) if decoder.get("type") == "Sequence" else [decoder]
    return (model.get("type") == "BPE" and not model.get("byte_fallback")
            and any(d.get("type") == "ByteLevel" for d in decoders))


def read_tokenizer_json(directory: Path) -> dict[str, Any]:
    """``tokenizer.json`` as a dict, or a clear error."""
    path = directory / "tokenizer.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConvertError(f"{path}: not a tokenizers file (expected a JSON object)")
    return data


def tokenizer_kind(directory: Path) -> str:
    """``spm`` (a ``tokenizer.model``) or ``bpe:<pre name>``; raises when neither fits."""
    if (directory / "tokenizer.model").exists():
        return "spm"
    if not (directory / "tokenizer.json").exists():
        raise ConvertError(
            f"{directory}: no tokenizer.model or tokenizer.json; copy the tokenizer files of "
            "the base model into this directory"
        )
    data = read_tokenizer_json(directory)
    if is_byte_level_bpe(data):
        return "bpe:" + detect_pre_tokenizer(data, directory / "tokenizer.json")
    if (data.get("model") or {}).get("type") == "BPE":
        return "spm-json"  # a sentencepiece BPE exported to tokenizer.json (LLaMA without .model)
    raise ConvertError(
        f"{directory / 'tokenizer.json'}: a {(data.get('model') or {}).get('type')!r} tokenizer; "
        "baize-convert writes sentencepiece (tokenizer.model) and byte-level BPE tokenizers only"
    )
