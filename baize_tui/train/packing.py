"""Padding-free training batches: no compute on padding, no attention across samples.

``--packing`` concatenates the examples of a micro-batch into one row, with position ids that
restart at 0 for every example and the example boundaries (``cu_seq_lens_q/k``, the cumulative
lengths FlashAttention's varlen kernel takes). The batches hold the same examples in the same
order as without packing, so the optimiser steps, the loss normalisation and the data order of a
resumed run are unchanged; only the padding is gone.

Attention must not cross a boundary, or a sample learns from the one before it. Two exact paths:

- ``flash_attention_2`` (CUDA with ``flash-attn`` installed, bf16/fp16): transformers hands the
  boundaries to ``flash_attn_varlen_func``.
- everywhere else: the attention function :data:`PACKED_ATTENTION`, registered with
  transformers, which runs PyTorch's scaled-dot-product attention causally on each example's own
  span (cost: the sum of the squared example lengths, never the packed row's square).

Whatever the path, :func:`check_isolation` runs the loaded model once on two packed probes
before training and refuses to train (naming what is missing) when the second probe's logits
depend on the first: a model whose attention ignores the boundaries is never trained silently.

Labels: the first label of every example is ``-100`` (nothing inside the example predicts it,
and the previous example's last token must not be trained to), so the causal shift inside the
model never pairs tokens of two examples. ``--loss ai|all`` masks are the examples' own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from baize_tui.errors import UserError

IGNORE_INDEX = -100
PACKED_ATTENTION = "baize_packed_sdpa"
# Attention implementations that take the example boundaries natively.
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3")
KERNELS = ("liger",)

_registered = False


class PackingCollator:
    """One padding-free row per micro-batch.

    Returns ``input_ids``, ``labels`` and ``position_ids`` of shape ``(1, total)``, the
    boundaries ``cu_seq_lens_q``/``cu_seq_lens_k`` (int32, ``[0, l1, l1+l2, ...]``),
    ``max_length_q``/``max_length_k``, and ``sample_ids`` (the dialogue ids, which the trainer
    removes before the forward pass). No ``attention_mask``: there is no padding.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        bounds = [0]
        for f in features:
            n = len(f["input_ids"])
            if n == 0:
                continue
            ids.extend(f["input_ids"])
            labels.append(IGNORE_INDEX)  # never predicted from the previous example
            labels.extend(f["labels"][1:])
            positions.extend(range(n))
            bounds.append(bounds[-1] + n)
        longest = max(b - a for a, b in zip(bounds, bounds[1:], strict=False))
        cu = torch.tensor(bounds, dtype=torch.int32)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([positions], dtype=torch.long),
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu.clone(),
            "max_length_q": longest,
            "max_length_k": longest,
        }
        if features and "id" in features[0]:
            batch["sample_ids"] = torch.tensor([f["id"] for f in features], dtype=torch.long)
        return batch


def batch_token_counts(inputs: dict[str, Any]) -> tuple[int, int]:
    """(real tokens, computed positions) of a model batch, padded or packed."""
    positions = int(inputs["input_ids"].numel())
    mask = inputs.get("attention_mask")
    if mask is not None and getattr(mask, "dim", lambda: 0)() == 2:
        return int(mask.sum()), positions
    return positions, positions


# -- attention ---------------------------------------------------------------------------------


def packed_sdpa_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any,
                          **kwargs: Any) -> tuple[Any, None]:
    """Scaled-dot-product attention, causal within each packed example.

    With ``cu_seq_lens_q`` (a packed batch of one row) each example attends only to itself;
    without it (an ordinary padded batch, generation) this is transformers' own sdpa path.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cu = kwargs.pop("cu_seq_lens_q", None)
    for extra in ("cu_seq_lens_k", "max_length_q", "max_length_k"):
        kwargs.pop(extra, None)
    if cu is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    kwargs.pop("is_causal", None)
    bounds = [int(b) for b in cu.tolist()]
    window = kwargs.pop("sliding_window", None)
    if window and max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) > window:
        raise UserError(f"--packing: a sample is longer than the model's sliding window "
                        f"({window}), which the per-sample attention does not apply; lower "
                        "--cutoff-len or install flash-attn")
    outputs = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        out, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end],
                                        value[:, :, start:end], None, is_causal=end - start > 1,
                                        **kwargs)
        outputs.append(out)
    return torch.cat(outputs, dim=1), None


def register_packed_attention() -> None:
    """Make :data:`PACKED_ATTENTION` an ``attn_implementation`` transformers knows."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    # No mask function is registered for it, so transformers builds no (T x T) mask at all:
    # every batch under this implementation is a packed row or one unpadded sequence.
    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa_attention)
    _registered = True


def flash_attention_available() -> bool:
    """Whether ``flash_attn`` (FlashAttention 2) is importable and a CUDA GPU is present."""
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def choose_attention(*, packing: bool, precision: str) -> str | None:
    """The ``attn_implementation`` to load the model with (``None``: transformers' default)."""
    if not packing:
        return None
    if precision in ("bf16", "fp16") and flash_attention_available():
        return "flash_attention_2"
    register_packed_attention()
    return PACKED_ATTENTION


def require_boundaries(model: Any) -> str:
    """The model's attention implementation, or a refusal when packing would leak across samples."""
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None) or "eager"
    if impl in VARLEN_ATTENTION or impl == PACKED_ATTENTION:
        return impl
    raise UserError(
        f"--packing: the model runs attention {impl!r}, which would let packed samples attend "
        f"to each other; it needs flash_attention_2 (pip install flash-attn, on a CUDA GPU) or "
        f"{PACKED_ATTENTION!r} (chosen automatically on CPU and other GPUs); drop --packing to "
        "train with padding"
    )


# -- checks --------------------------------------------------------------------------------------


def per_example_losses(logits: Any, labels: Any, bounds: Sequence[int]) -> list[Any]:
    """Mean next-token loss of each example of a packed row (``logits``: ``(1, T, V)``).

    Position *t* predicts label *t + 1*, as in the model's own loss; an example without a trained
    token gets ``nan``.
    """
    import torch

    logits = logits[0].float()
    target = torch.full_like(labels[0], IGNORE_INDEX)
    target[:-1] = labels[0, 1:]
    losses = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX,
                                               reduction="none")
    out = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        counted = (target[start:end] != IGNORE_INDEX).sum()
        out.append(losses[start:end].sum() / counted)
    return out


def check_isolation(model: Any, token_ids: Sequence[int], *, half: bool = False) -> None:
    """Refuse to train when a packed example sees the one before it.

    Runs the model on two probes ``a`` and ``b`` (taken from ``token_ids``): ``b`` alone, ``b``
    packed after ``a``, and ``b`` simply appended to ``a``. Packed logits must match ``b`` alone
    far more closely than the appended ones do.
    """
    import torch

    ids = [int(t) for t in token_ids]
    if len(ids) < 8:
        raise UserError("--packing: too few tokens to check sample isolation")
    half_len = min(len(ids) // 2, 32)
    a, b = ids[:half_len], ids[half_len:2 * half_len]
    collate = PackingCollator()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([b], device=device)).logits[0].float()
            batch = collate([{"input_ids": a, "labels": a}, {"input_ids": b, "labels": b}])
            batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
            batch.pop("labels")
            packed = model(**batch).logits[0, len(a):].float()
            joined = model(input_ids=torch.tensor([a + b], device=device)).logits[0, len(a):].float()
    finally:
        model.train(was_training)
    err = float((packed - alone).abs().max())
    leak = float((joined - alone).abs().max())
    scale = float(alone.abs().max()) or 1.0
    tolerance = max(0.25 * leak, (2e-2 if half else 1e-4) * scale)
    if err > tolerance:
        impl = getattr(model.config, "_attn_implementation", "?")
        raise UserError(
            f"--packing: attention {impl!r} lets packed samples see each other (probe logits "
            f"differ by {err:.3g}, appending differs by {leak:.3g}); training with it would "
            "contaminate samples. Drop --packing, or install flash-attn on a CUDA GPU"
        )


def require_kernel_package(kernels: str) -> None:
    """Refuse ``--kernels`` naming a package that is not installed (no torch import: the CLI
    calls this before it starts a run)."""
    if not kernels:
        return
    if kernels not in KERNELS:
        raise UserError(f"--kernels must be one of {', '.join(KERNELS)}")
    import importlib.util

    if importlib.util.find_spec("liger_kernel") is None:
        raise UserError("--kernels liger needs the liger-kernel package: pip install "
                        "'baize-tui[kernels]' (Triton kernels, CUDA GPU only); or drop --kernels")


def check_kernels(kernels: str) -> None:
    """A clear refusal when ``--kernels`` asks for something that is not installed or usable."""
    if not kernels:
        return
    require_kernel_package(kernels)
    import torch

    if not torch.cuda.is_available():
        raise UserError("--kernels liger needs a CUDA GPU (its kernels are Triton); drop "
                        "--kernels on this machine")


def probe_tokens(examples: Sequence[dict[str, Any]], want: int = 64) -> list[int]:
    """Real token ids for :func:`check_isolation`, taken from the first training examples."""
    ids: list[int] = []
    for example in examples:
        ids.extend(example["input_ids"])
        if len(ids) >= want:
            break
    return ids[:want]


def sampling_args(config: Any, training_arguments: type) -> dict[str, Any]:
    """``TrainingArguments`` keywords for ``--group-by-length`` and ``--kernels``.

    transformers 5 spells length grouping ``train_sampling_strategy="group_by_length"``;
    older releases had a ``group_by_length`` flag.
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(training_arguments)}
    out: dict[str, Any] = {}
    if config.group_by_length:
        if "train_sampling_strategy" in names:
            out["train_sampling_strategy"] = "group_by_length"
        else:
            out["group_by_length"] = True
    if config.kernels == "liger":
        out["use_liger_kernel"] = True
    return out
