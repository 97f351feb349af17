"""Training data: render dialogues in the Baize format, tokenize them, mask the labels.

Reading the files (Baize's released JSON, chat-messages JSONL) and the train/validation split
live in :mod:`baize_tui.train.dialogues`; their names are re-exported here.

A dialogue is rendered with :mod:`baize_tui.prompt`'s strings (``template="chat"``: exactly the
prompt ``baize-tui`` sends at chat time) or in the released data's spaced form
(``template="release"``). With ``loss="ai"`` only the AI texts are trained, each together with
the ``[|Human|]`` marker that follows it, so the model learns to stop; ``loss="all"`` trains
every token but padding. Masks come from one tokenization of the whole text with character
offsets, never from concatenating separately tokenized pieces (SentencePiece merges across the
joins). Too-long dialogues lose whole trailing turns first; only a first turn that alone exceeds
the cutoff is cut mid-text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from baize_tui.errors import UserError
from baize_tui.prompt import BAIZE_SYSTEM_PROMPT, HUMAN_TAG, render_turn
from baize_tui.selfchat.templates import BAIZE_AI, BAIZE_HEADER, BAIZE_HUMAN
from baize_tui.train.dialogues import (  # noqa: F401 (re-exported: reading lives there)
    DEFAULT_VAL_FRACTION,
    DEFAULT_VAL_MAX,
    Dialogue,
    LoadedData,
    load_dialogues,
    parse_baize_input,
    read_file,
    resolve_val_size,
    split_dialogues,
)

IGNORE_INDEX = -100
# More dropped examples than this fraction (no trained token left) fails the run.
MAX_DROPPED_FRACTION = 0.2


# -- rendering -------------------------------------------------------------------------------


@dataclass
class Rendered:
    """A dialogue's training text and the character spans trained under ``loss="ai"``.

    ``ai_spans[i]`` covers AI turn *i* plus the ``[|Human|]`` marker after it; its end is also
    where the text may be cut after *i + 1* whole turns.
    """

    text: str
    ai_spans: list[tuple[int, int]]


def render_dialogue(dialogue: Dialogue, template: str = "chat") -> Rendered:
    """The text a dialogue is trained on.

    ``chat``: the system prompt (the dialogue's own or Baize's), then each turn exactly as
    :func:`baize_tui.prompt.render_turn` writes it, then ``"\\n[|Human|]"``; the text before each
    AI reply equals what :func:`baize_tui.prompt.render` sends for that turn at chat time.
    ``release``: Baize's released data (``BAIZE_HEADER``, ``"[|Human|] "`` / ``"[|AI|] "`` tags).
    ``base``: the base model's own chat template, given as a
    :class:`~baize_tui.train.base_template.BaseTemplate` (see :func:`resolve_template`).
    """
    from baize_tui.train.base_template import BaseTemplate

    if isinstance(template, BaseTemplate):
        return Rendered(*template.render(dialogue.system, dialogue.turns))
    spans: list[tuple[int, int]] = []
    if template == "chat":
        text = BAIZE_SYSTEM_PROMPT if dialogue.system is None else dialogue.system
        closing = "\n" + HUMAN_TAG
        for user, assistant in dialogue.turns:
            piece = render_turn(user, assistant)
            start = len(text) + len(piece) - len(assistant)
            text += piece
            spans.append((start, len(text) + len(closing)))
        text += closing
    elif template == "release":
        text = BAIZE_HEADER
        marker = BAIZE_HUMAN.rstrip()
        for user, assistant in dialogue.turns:
            text += f"{BAIZE_HUMAN}{user}\n{BAIZE_AI}"
            start = len(text)
            text += f"{assistant}\n"
            spans.append((start, len(text) + len(marker)))
        text += BAIZE_HUMAN
    else:
        raise UserError(f"unknown template {template!r}; choose chat, release or base")
    return Rendered(text, spans)


# -- tokenization and masks --------------------------------------------------------------------


@dataclass
class Encoded:
    """One tokenized example: ids, labels (``-100`` = not trained), and how it was cut."""

    input_ids: list[int]
    labels: list[int]
    n_turns: int
    kept_turns: int
    hard_cut: bool = False

    @property
    def n_trained(self) -> int:
        """Tokens that count towards the loss."""
        return sum(1 for label in self.labels if label != IGNORE_INDEX)

    @property
    def truncated(self) -> bool:
        """Whether anything of the dialogue was left out."""
        return self.hard_cut or self.kept_turns < self.n_turns


def require_fast_tokenizer(tokenizer: Any) -> None:
    """Label masks need character offsets, which only fast (tokenizers) tokenizers give."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            f"{getattr(tokenizer, 'name_or_path', 'the tokenizer')}: a fast tokenizer "
            "(tokenizer.json) is needed for label masking; save one with transformers' "
            "AutoTokenizer.from_pretrained(...).save_pretrained(...)"
        )


def load_tokenizer(base: str) -> Any:
    """The base model's fast tokenizer (transformers imported here)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except (OSError, ValueError) as exc:
        raise UserError(f"{base}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from None
    require_fast_tokenizer(tokenizer)
    if tokenizer.bos_token_id is None:
        raise UserError(f"{base}: the tokenizer has no BOS token; is this a LLaMA tokenizer?")
    return tokenizer


def _label_mask(offsets: Any, spans: Sequence[tuple[int, int]]) -> Any:
    """Boolean array: token *i* overlaps one of ``spans`` (zero-width tokens count as a point)."""
    import numpy as np

    if len(offsets) == 0:
        return np.zeros(0, dtype=bool)
    arr = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    starts, ends = arr[:, 0], np.maximum(arr[:, 1], arr[:, 0] + 1)
    mask = np.zeros(len(arr), dtype=bool)
    for s, e in spans:
        mask |= (starts < e) & (ends > s)
    return mask


def _encode_text(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _labels(ids: list[int], offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]],
            loss: str, bos_id: int | None) -> list[int]:
    if loss == "all":
        labels = list(ids)
        if labels and bos_id is not None and labels[0] == bos_id:
            labels[0] = IGNORE_INDEX  # nothing predicts the first token
        return labels
    mask = _label_mask(offsets, spans)
    return [tok if keep else IGNORE_INDEX for tok, keep in zip(ids, mask.tolist(), strict=True)]


def encode_rendered(tokenizer: Any, dialogue: Dialogue, rendered: Rendered, ids: list[int],
                    offsets: list[tuple[int, int]], *, template: str, cutoff_len: int,
                    loss: str) -> Encoded:
    """Labels for an already tokenized rendering, cutting to ``cutoff_len`` by whole turns."""
    n_turns = len(dialogue.turns)
    kept, hard_cut = n_turns, False
    spans = rendered.ai_spans
    if len(ids) > cutoff_len:
        # Tokens needed for the first k turns, estimated from the offsets, then checked by
        # tokenizing that prefix (SentencePiece may split the joint differently).
        kept = 0
        for k in range(n_turns - 1, 0, -1):
            end = spans[k - 1][1]
            if sum(1 for a, _ in offsets if a < end) > cutoff_len + 4:
                continue
            shorter = Dialogue(dialogue.turns[:k], dialogue.system, dialogue.source)
            r = render_dialogue(shorter, template)
            k_ids, k_offsets = _encode_text(tokenizer, r.text)
            if len(k_ids) <= cutoff_len:
                kept, rendered, ids, offsets, spans = k, r, k_ids, k_offsets, r.ai_spans
                break
        if kept == 0:
            kept, hard_cut = 1, True
            ids, offsets = ids[:cutoff_len], offsets[:cutoff_len]
            spans = rendered.ai_spans[:1]
    labels = _labels(ids, offsets, spans, loss, tokenizer.bos_token_id)
    return Encoded(ids, labels, n_turns, kept, hard_cut)


def encode_dialogue(tokenizer: Any, dialogue: Dialogue, *, template: str = "chat",
                    cutoff_len: int = 512, loss: str = "ai") -> Encoded:
    """Render, tokenize once with offsets, and mask one dialogue."""
    rendered = render_dialogue(dialogue, template)
    ids, offsets = _encode_text(tokenizer, rendered.text)
    return encode_rendered(tokenizer, dialogue, rendered, ids, offsets, template=template,
                           cutoff_len=cutoff_len, loss=loss)


@dataclass
class EncodeStats:
    """What tokenization kept, cut and dropped."""

    examples: int = 0
    dropped_no_labels: int = 0
    truncated: int = 0
    tokens: int = 0
    trained_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """For status.json and the log."""
        return dict(self.__dict__)


def encode_all(tokenizer: Any, dialogues: Sequence[Dialogue], *, template: str, cutoff_len: int,
               loss: str, chunk: int = 512) -> tuple[list[dict[str, Any]], EncodeStats]:
    """Tokenize a list in batches; returns examples (``input_ids``, ``labels``, ``id``) and stats.

    ``id`` is the dialogue's position in ``dialogues``. Examples left without a trained token
    (the cutoff removed every AI token) are dropped and counted.
    """
    stats = EncodeStats()
    examples: list[dict[str, Any]] = []
    for start in range(0, len(dialogues), chunk):
        part = dialogues[start:start + chunk]
        rendered = [render_dialogue(d, template) for d in part]
        enc = tokenizer([r.text for r in rendered], return_offsets_mapping=True,
                        add_special_tokens=True)
        for i, (dialogue, r) in enumerate(zip(part, rendered, strict=True)):
            ids = list(enc["input_ids"][i])
            offsets = [tuple(o) for o in enc["offset_mapping"][i]]
            e = encode_rendered(tokenizer, dialogue, r, ids, offsets, template=template,
                                cutoff_len=cutoff_len, loss=loss)
            if e.n_trained == 0:
                stats.dropped_no_labels += 1
                continue
            stats.examples += 1
            stats.truncated += int(e.truncated)
            stats.tokens += len(e.input_ids)
            stats.trained_tokens += e.n_trained
            examples.append({"input_ids": e.input_ids, "labels": e.labels, "id": start + i})
    return examples, stats


def check_dropped(stats: EncodeStats, *, cutoff_len: int, what: str = "training") -> None:
    """Fail when the cutoff left too many examples with nothing to train."""
    total = stats.examples + stats.dropped_no_labels
    if stats.examples == 0 or stats.dropped_no_labels > MAX_DROPPED_FRACTION * total:
        raise UserError(
            f"{stats.dropped_no_labels} of {total} {what} dialogues have no AI token left within "
            f"--cutoff-len {cutoff_len} (the prompt fills it); raise --cutoff-len or use shorter "
            "system prompts"
        )


class Collator:
    """Pads a batch to its longest example: ``attention_mask`` marks real tokens, padded labels
    are ``-100`` (padding is masked by position, never by id, so a pad id equal to EOS is safe).
    ``sample_ids`` carries the dialogue ids (the trainer removes it before the forward pass)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = pad_id
        self.multiple = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        ids = torch.full((len(features), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), longest), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), longest), dtype=torch.long)
        for row, f in enumerate(features):
            n = len(f["input_ids"])
            ids[row, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            labels[row, :n] = torch.tensor(f["labels"], dtype=torch.long)
            mask[row, :n] = 1
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        if "id" in features[0]:
            batch["sample_ids"] = torch.tensor([f["id"] for f in features], dtype=torch.long)
        return batch


# -- preview -----------------------------------------------------------------------------------


@dataclass
class Preview:
    """A rendered example cut into token pieces, each marked trained or not."""

    pieces: list[tuple[str, bool]]
    encoded: Encoded
    source: str

    @property
    def n_tokens(self) -> int:
        """Tokens in the example (BOS included)."""
        return len(self.encoded.input_ids)


def preview_dialogue(tokenizer: Any, dialogue: Dialogue, *, template: str = "chat",
                     cutoff_len: int = 512, loss: str = "ai") -> Preview:
    """What one dialogue trains on, piece by piece (the text of each token, trained or not)."""
    encoded = encode_dialogue(tokenizer, dialogue, template=template, cutoff_len=cutoff_len,
                              loss=loss)
    kept = Dialogue(dialogue.turns[:encoded.kept_turns], dialogue.system, dialogue.source)
    text = render_dialogue(kept, template).text
    _, offsets = _encode_text(tokenizer, text)
    offsets = offsets[:len(encoded.input_ids)]
    pieces: list[tuple[str, bool]] = []
    for i, ((a, _b), label) in enumerate(zip(offsets, encoded.labels, strict=False)):
        nxt = offsets[i + 1][0] if i + 1 < len(offsets) else (len(text) if not encoded.hard_cut
                                                             else offsets[i][1])
        piece = text[a:max(a, nxt)]
        if i == 0 and encoded.input_ids[0] == tokenizer.bos_token_id and not piece:
            piece = tokenizer.bos_token or ""
        pieces.append((piece, label != IGNORE_INDEX))
    return Preview(pieces, encoded, dialogue.source)
