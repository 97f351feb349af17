"""Decisions the trainer makes once the base is known: is it convertible to a GGUF (checked
before any step), which modules LoRA adapts, and a warmup that fits the run.

No torch here; ``baize_convert`` is imported inside the function that needs it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from baize_tui.errors import UserError

# Baize v1's six (BAIZE.md §2): LLaMA-1 bases keep the recipe.
BAIZE_V1_MODULES = ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj", "up_proj"]
# Every projection: the usual choice for today's bases (Llama 2/3, Mistral, SmolLM, TinyLlama).
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def is_llama1(config: dict[str, Any]) -> bool:
    """Whether an HF config describes an original LLaMA (the base Baize was trained on):
    model_type llama, RMSNorm eps 1e-6, at most 2048 positions, no GQA, no rope scaling.
    Llama 2, TinyLlama and SmolLM use eps 1e-5; Llama 3 and Mistral have GQA."""
    heads = config.get("num_attention_heads")
    kv = config.get("num_key_value_heads") or heads
    scaling = config.get("rope_scaling") or config.get("rope_parameters") or {}
    scaled = str(scaling.get("rope_type") or scaling.get("type") or "default") != "default"
    return (str(config.get("model_type", "")).lower() == "llama"
            and abs(float(config.get("rms_norm_eps", 1e-6)) - 1e-6) < 1e-9
            and int(config.get("max_position_embeddings") or 2048) <= 2048
            and kv == heads and not scaled)


def target_modules_for(setting: list[str] | str, config: dict[str, Any]) -> list[str] | str:
    """``auto``: Baize's six for LLaMA-1, all seven projections otherwise; else the setting."""
    if setting != "auto":
        return setting
    return list(BAIZE_V1_MODULES if is_llama1(config) else ALL_PROJECTIONS)


def total_steps(max_steps: int, num_epochs: float, n_examples: int, micro_batch: int,
                world: int, grad_accum: int) -> int:
    """Optimizer steps the run will take (as the Trainer counts them)."""
    if max_steps > 0:
        return max_steps
    batches = math.ceil(n_examples / max(1, micro_batch * world))
    per_epoch = max(1, batches // grad_accum + (1 if batches % grad_accum else 0))
    return max(1, math.ceil(num_epochs * per_epoch))


def clamp_warmup(warmup: float, steps: int) -> tuple[float, str | None]:
    """The warmup to use and a notice when it had to change.

    A warmup as long as the run or longer keeps the learning rate near zero for all of it
    (``--max-steps 8`` with the default 100 warmup steps trains nothing); it is cut to a
    tenth of the run instead. A fraction (< 1) is already relative to the run.
    """
    if warmup < 1 or warmup < steps:
        return warmup, None
    clamped = steps // 10
    return clamped, (f"warmup of {int(warmup)} steps is not shorter than the run ({steps} steps); "
                     f"using {clamped} warmup steps (a tenth of the run)")


def preflight_convertible(base: str) -> str:
    """Check before any training that the base can become a GGUF; returns a summary.

    A hub id is resolved (downloaded or taken from the cache, as the trainer does anyway).
    Raises :class:`UserError` naming what is unsupported.
    """
    from baize_convert.hub import resolve_model_dir
    from baize_convert.support import check_convertible

    path = Path(base).expanduser()
    directory = path if path.is_dir() else resolve_model_dir(base, what="base model")
    try:
        return check_convertible(directory).summary()
    except UserError as exc:
        raise UserError(f"{exc}; baize-convert could not turn an adapter trained on this base "
                        "into a GGUF, so training was not started") from None
