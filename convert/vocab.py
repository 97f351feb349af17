"""The tokenizer as GGUF metadata: tokens, scores and types sized to the embedding rows.

Byte-level BPE tokenizers (Llama 3, SmolLM: GPT-2-style merges) are read by :func:`_from_bpe`
and written as llama.cpp's ``gpt2`` model with merges and a pre-tokenizer name (see bpe.py).
A sentencepiece tokenizer is read from ``tokenizer.model`` with sentencepiece (real scores, which llama.cpp's SPM tokenizer
merges by), or from ``tokenizer.json`` alone (scores from the vocabulary order, which is the
merge order of a sentencepiece BPE model). Tokens added after training (``added_tokens.json``,
``tokenizer.json``'s ``added_tokens``, ``tokenizer_config.json``'s ``added_tokens_decoder``) go
at their ids. Special ids come from the tokenizer, never from ``config.json`` (decapoda-era
configs say bos 0 / eos 1).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from baize_convert import ConvertError
from baize_convert.bpe import read_tokenizer_json, tokenizer_kind

log = logging.getLogger(__name__)
T = gguf.TokenType


@dataclass
class Vocab:
    """What ``tokenizer.ggml.*`` needs."""

    tokens: list[bytes] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int | None = 0
    source: str = ""
    model: str = "llama"  # tokenizer.ggml.model: llama (sentencepiece) or gpt2 (byte-level BPE)
    pre: str = "default"  # tokenizer.ggml.pre
    merges: list[str] = field(default_factory=list)
    add_bos: bool = True
    add_eos: bool = False
    pad_id: int | None = None
    eot_id: int | None = None  # end of a turn in the embedded chat template
    base_template: str | None = None  # the checkpoint's own chat template, if it has one

    def token_id(self, text: str) -> int | None:
        """The id of a token by its text, or None."""
        wanted = text.encode("utf-8")
        for i, token in enumerate(self.tokens):
            if token == wanted:
                return i
        return None

    def place(self, token_id: int, text: str, score: float, ttype: int) -> None:
        """Put a token at ``token_id``, filling any gap before it with unused entries."""
        while len(self.tokens) < token_id:
            self._pad()
        entry = (text.encode("utf-8"), float(score), int(ttype))
        if token_id == len(self.tokens):
            self.tokens.append(entry[0])
            self.scores.append(entry[1])
            self.types.append(entry[2])
        else:
            self.tokens[token_id], self.scores[token_id], self.types[token_id] = entry

    def _pad(self) -> None:
        self.tokens.append(f"[PAD{len(self.tokens)}]".encode())
        self.scores.append(-10000.0)
        self.types.append(int(T.UNUSED))

    def pad_to(self, rows: int, where: Path) -> None:
        """Fill up to the embedding row count with unused ``[PAD{i}]`` entries."""
        if len(self.tokens) > rows:
            raise ConvertError(
                f"{where}: the tokenizer has {len(self.tokens)} tokens but the embedding has "
                f"only {rows} rows; tokenizer and weights do not belong together"
            )
        while len(self.tokens) < rows:
            self._pad()


def load_vocab(directory: Path, rows: int) -> Vocab:
    """Read the tokenizer next to a checkpoint and size it to ``rows`` embedding rows."""
    kind = tokenizer_kind(directory)
    if kind.startswith("bpe:"):
        vocab = _from_bpe(directory, rows, kind.removeprefix("bpe:"))
        vocab.base_template = base_chat_template(directory)
        return vocab
    if kind == "spm":
        vocab = _from_sentencepiece(directory)
    else:
        vocab = _from_tokenizer_json(directory)
    config = _tokenizer_config(directory)
    if isinstance(config.get("add_bos_token"), bool):
        vocab.add_bos = config["add_bos_token"]
    vocab.base_template = base_chat_template(directory)
    base_size = len(vocab.tokens)
    vocab.pad_to(rows, directory)
    for token_id, text, special in _added_tokens(directory):
        if token_id < base_size:
            continue  # a base token (<s>, </s>, …) listed again
        if token_id >= rows:
            log.warning("%s: added token %r has id %d beyond the %d embedding rows; skipped",
                        directory, text, token_id, rows)
            continue
        vocab.place(token_id, text, -1000.0, T.CONTROL if special else T.USER_DEFINED)
    return vocab


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{path}: not valid JSON ({exc})") from None


def _tokenizer_config(directory: Path) -> dict[str, Any]:
    path = directory / "tokenizer_config.json"
    data = _read_json(path) if path.exists() else {}
    return data if isinstance(data, dict) else {}


def base_chat_template(directory: Path) -> str | None:
    """The checkpoint's own chat template (tokenizer_config.json or chat_template.jinja)."""
    template = _tokenizer_config(directory).get("chat_template")
    if isinstance(template, str) and template.strip():
        return template
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    return None


def _bpe_token_types(data: dict[str, Any], directory: Path,
                     rows: int) -> tuple[dict[int, str], dict[int, int]]:
    """Token text and GGUF token type per id, for a byte-level BPE ``tokenizer.json``."""
    texts: dict[int, str] = {int(i): t for t, i in data["model"]["vocab"].items()}
    types: dict[int, int] = dict.fromkeys(texts, int(T.NORMAL))
    for info in data.get("added_tokens") or []:
        token_id = int(info["id"])
        texts[token_id] = info["content"]
        types[token_id] = int(T.CONTROL if info.get("special") else T.USER_DEFINED)
    beyond = [i for i in texts if i >= rows]
    if beyond:
        raise ConvertError(
            f"{directory / 'tokenizer.json'}: token id {max(beyond)} is beyond the {rows} "
            "embedding rows; tokenizer and weights do not belong together"
        )
    return texts, types


def _from_bpe(directory: Path, rows: int, pre: str) -> Vocab:
    """A byte-level BPE ``tokenizer.json`` as llama.cpp's ``gpt2`` vocabulary."""
    data = read_tokenizer_json(directory)
    texts, types = _bpe_token_types(data, directory, rows)
    vocab = Vocab(source=str(directory / "tokenizer.json"), model="gpt2", pre=pre, unk_id=None)
    for token_id in sorted(texts):
        vocab.place(token_id, texts[token_id], 0.0, types[token_id])
    vocab.pad_to(rows, directory)
    gguf_log = logging.getLogger("gguf.vocab")
    level = gguf_log.level
    gguf_log.setLevel(logging.ERROR)  # it warns about Llama 3's own pair template
    try:
        special = gguf.SpecialVocab(directory, load_merges=True, n_vocab=rows,
                                    special_token_types=("bos", "eos", "unk", "pad"))
    except ValueError as exc:
        raise ConvertError(f"{directory}: invalid special token in the tokenizer files ({exc})") from None
    finally:
        gguf_log.setLevel(level)
    if not special.merges:
        raise ConvertError(f"{directory / 'tokenizer.json'}: a byte-level BPE without merges")
    vocab.merges = list(special.merges)
    ids = special.special_token_ids
    if "bos" not in ids or "eos" not in ids:
        raise ConvertError(
            f"{directory}: tokenizer_config.json names no bos_token/eos_token that is a token "
            "of tokenizer.json; add them (the base's own tokenizer files have them)"
        )
    vocab.bos_id, vocab.eos_id = ids["bos"], ids["eos"]
    vocab.unk_id, vocab.pad_id = ids.get("unk"), ids.get("pad")
    vocab.add_bos = bool(special.add_special_token.get("bos", False))
    vocab.add_eos = bool(special.add_special_token.get("eos", False))
    return vocab


def _added_tokens(directory: Path) -> list[tuple[int, str, bool]]:
    """(id, text, special) of tokens added after training, from every place HF keeps them."""
    found: dict[int, tuple[str, bool]] = {}
    path = directory / "added_tokens.json"
    if path.exists():
        for text, token_id in _read_json(path).items():
            found[int(token_id)] = (text, False)
    path = directory / "tokenizer_config.json"
    if path.exists():
        for token_id, info in (_read_json(path).get("added_tokens_decoder") or {}).items():
            found[int(token_id)] = (info["content"], bool(info.get("special")))
    path = directory / "tokenizer.json"
    if path.exists():
        for info in _read_json(path).get("added_tokens") or []:
            found[int(info["id"])] = (info["content"], bool(info.get("special")))
    return sorted((token_id, text, special) for token_id, (text, special) in found.items())


def _from_sentencepiece(directory: Path) -> Vocab:
    import sentencepiece as spm

    path = directory / "tokenizer.model"
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
    except (OSError, RuntimeError) as exc:
        raise ConvertError(f"{path}: cannot read this sentencepiece model ({exc})") from None
    vocab = Vocab(source=str(path))
    for i in range(sp.vocab_size()):
        if sp.IsUnknown(i):
            ttype = T.UNKNOWN
        elif sp.IsControl(i):
            ttype = T.CONTROL
        elif sp.IsUnused(i):
            ttype = T.UNUSED
        elif sp.IsByte(i):
            ttype = T.BYTE
        else:
            ttype = T.NORMAL
        vocab.place(i, sp.IdToPiece(i), sp.GetScore(i), ttype)
    vocab.bos_id, vocab.eos_id, vocab.unk_id = sp.bos_id(), sp.eos_id(), sp.unk_id()
    if min(vocab.bos_id, vocab.eos_id) < 0:
        raise ConvertError(f"{path}: the tokenizer defines no BOS/EOS token")
    return vocab


def _from_tokenizer_json(directory: Path) -> Vocab:
    path = directory / "tokenizer.json"
    data = _read_json(path)
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ConvertError(
            f"{path}: expected a sentencepiece-style BPE tokenizer (LLaMA); found "
            f"{model.get('type')!r}; add the model's tokenizer.model instead"
        )
    specials = {info["content"]: bool(info.get("special")) for info in data.get("added_tokens") or []}
    unk = model.get("unk_token") or "<unk>"
    vocab = Vocab(source=str(path))
    for text, token_id in sorted(model["vocab"].items(), key=lambda kv: kv[1]):
        if text == unk:
            ttype, score = T.UNKNOWN, 0.0
        elif specials.get(text):
            ttype, score = T.CONTROL, 0.0
        elif len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            ttype, score = T.BYTE, 0.0
        else:
            # sentencepiece BPE numbers pieces in merge order with score -rank; the ids keep
            # that order, so -id gives llama.cpp the same merge priorities.
            ttype, score = T.NORMAL, -float(token_id)
        vocab.place(int(token_id), text, score, ttype)
    ids = {text: token_id for text, token_id in model["vocab"].items()}
    vocab.bos_id, vocab.eos_id = ids.get("<s>", 1), ids.get("</s>", 2)
    vocab.unk_id = ids.get(unk, 0)
    return vocab
