"""The tokenizer as GGUF metadata: tokens, scores and types sized to the embedding rows.

Read from ``tokenizer.model`` through gguf's ``SentencePieceVocab`` (with real scores, which
llama.cpp's SPM tokenizer merges by), falling back to ``tokenizer.json``. Special ids come
from the tokenizer, never from ``config.json`` (decapoda-era configs say bos 0 / eos 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import gguf

from baize_convert import ConvertError


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

    def pad_to(self, rows: int, where: Path) -> None:
        """Fill up to the embedding row count with unused ``[PAD{i}]`` entries."""
        if len(self.tokens) > rows:
            raise ConvertError(
                f"{where}: the tokenizer has {len(self.tokens)} tokens but the embedding has "
                f"only {rows} rows; tokenizer and weights do not belong together"
            )
        for i in range(len(self.tokens), rows):
            self.tokens.append(f"[PAD{i}]".encode())
            self.scores.append(-10000.0)
            self.types.append(int(gguf.TokenType.UNUSED))


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
    vocab.pad_to(rows, directory)
    return vocab


def _from_sentencepiece(directory: Path) -> Vocab:
    import sentencepiece as spm

    path = directory / "tokenizer.model"
    try:
        sp = spm.SentencePieceProcessor(model_file=str(path))
        spv = gguf.SentencePieceVocab(directory)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConvertError(f"{path}: cannot read this sentencepiece model ({exc})") from None
    vocab = Vocab(source=str(path))
    for text, score, ttype in spv.all_tokens():
        vocab.tokens.append(text)
        vocab.scores.append(float(score))
        vocab.types.append(int(ttype))
    vocab.bos_id, vocab.eos_id, vocab.unk_id = sp.bos_id(), sp.eos_id(), sp.unk_id()
    if min(vocab.bos_id, vocab.eos_id) < 0:
        raise ConvertError(f"{path}: the tokenizer defines no BOS/EOS token")
    return vocab


def _from_tokenizer_json(directory: Path) -> Vocab:
    try:
        hfv = gguf.LlamaHfVocab(directory)
    except Exception as exc:  # transformers/tokenizers raise many types
        raise ConvertError(f"{directory / 'tokenizer.json'}: cannot read it ({exc})") from None
    vocab = Vocab(source=str(directory / "tokenizer.json"))
    for text, score, ttype in hfv.all_tokens():
        vocab.tokens.append(text)
        vocab.scores.append(float(score))
        vocab.types.append(int(ttype))
    pieces = {t: i for i, t in enumerate(vocab.tokens)}
    vocab.bos_id = pieces.get(b"<s>", 1)
    vocab.eos_id = pieces.get(b"</s>", 2)
    vocab.unk_id = pieces.get(b"<unk>", 0)
    return vocab
