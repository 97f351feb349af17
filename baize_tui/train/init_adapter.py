"""``train run --init-adapter``: start a new LoRA on top of a frozen one (Baize v2's SDF).

Baize v2 trains new LoRA matrices on top of the frozen SFT LoRA: h = W0·x + B_sft·A_sft·x +
B_sdf·A_sdf·x. Here the SFT adapter is merged into the base weights in memory (W0 + s·B·A in
the Hugging Face layout, with the same adapter reader and merge rule as ``baize-convert``,
legacy Baize ``.bin`` adapters included) before the new LoRA is wrapped around the model, which
computes the same function with only the new matrices trainable. ``baize-convert merge --lora
SFT --lora SDF`` later applies both in that order.

A base loaded in 8/4 bits (``--load-in``) cannot take an exact in-place merge, so that
combination is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from baize_tui.errors import UserError


def check_init_adapter_fits(adapter_dir: str, base: str) -> None:
    """Fail before launch when the adapter is unreadable or does not fit the base's shapes."""
    from baize_convert.checkpoint import Checkpoint
    from baize_convert.lora import Adapter

    try:
        adapter = Adapter.open(Path(adapter_dir))
        base_path = Path(base)
        if base_path.is_dir():
            adapter.check_against(Checkpoint.open(base_path, weights=True))
    except UserError as exc:
        raise UserError(f"--init-adapter: {exc}") from None


def merge_init_adapter(model: Any, adapter_dir: str, *, quantized: bool = False) -> int:
    """Add the adapter's ``scale·B@A`` to the matching weights of ``model``; returns how many
    tensors changed. The merged weights stay frozen (peft freezes the base when it wraps it)."""
    if quantized:
        raise UserError("--init-adapter cannot be merged into a base loaded with --load-in "
                        "(8/4-bit weights); train in bf16/fp32, or merge the SFT adapter into the "
                        "base first with `baize-convert merge --hf-out`")
    import torch

    from baize_convert.lora import Adapter

    adapter = Adapter.open(Path(adapter_dir))
    params = dict(model.named_parameters())
    changed = 0
    with torch.no_grad():
        for name, pair in adapter.pairs.items():
            param = params.get(name)
            if param is None:
                raise UserError(f"--init-adapter {adapter_dir}: targets {name}, which the base "
                                "model does not have; is it for another architecture?")
            delta = torch.from_numpy(pair.delta())
            if tuple(delta.shape) != tuple(param.shape):
                raise UserError(f"--init-adapter {adapter_dir}: {name} is {tuple(delta.shape)} "
                                f"but the base has {tuple(param.shape)}; it was trained on "
                                "another base model")
            merged = param.data.to(torch.float32) + delta.to(param.device)
            param.data.copy_(merged.to(param.dtype))
            changed += 1
    if not changed:
        raise UserError(f"--init-adapter {adapter_dir}: the adapter changes no weight")
    return changed
