"""The tokenizer as GGUF metadata: tokens, scores and types sized to the embedding rows.

Read from ``tokenizer.model`` with sentencepiece (real scores, which llama.cpp's SPM tokenizer
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
    unk_id: int = 0
    source: str = ""

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
    if (directory / "tokenizer.model").exists():
        vocab = _from_sentencepiece(directory)
    elif (directory / "tokenizer.json").exists():
        vocab = _from_tokenizer_json(directory)
    else:
        raise ConvertError(
            f"{directory}: no tokenizer.model or tokenizer.json; copy the tokenizer files of "
            "the base model into this directory"
        )
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
