"""Engines: one streaming protocol over several backends, opened from a spec string.

=================  ===============================================================
spec               engine
=================  ===============================================================
``PATH.gguf``      llama.cpp on a local GGUF (the default): :mod:`.llama`
``openai:MODEL``   any OpenAI-compatible chat API: :mod:`.openai_api`
``hf:BASE[+LORA]`` transformers + peft on an unmerged adapter: :mod:`.hf`
=================  ===============================================================

Backends import their libraries only when opened, so importing this package is cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from baize_tui.engines.base import (
    FINISH_REASONS,
    Engine,
    FinishReason,
    Generation,
    Messages,
    PromptOrMessages,
    SamplingParams,
    TurnStats,
)
from baize_tui.errors import UserError

__all__ = [
    "FINISH_REASONS",
    "Engine",
    "FinishReason",
    "Generation",
    "Messages",
    "PromptOrMessages",
    "SamplingParams",
    "TurnStats",
    "open_engine",
    "SPEC_HELP",
]

SPEC_HELP = "PATH.gguf (llama.cpp), openai:MODEL, or hf:BASE[+LORA]"


def open_engine(
    spec: str,
    *,
    config: dict[str, Any] | None = None,
    base_url: str | None = None,
    n_ctx: int | None = None,
    lora: str | None = None,
) -> Engine:
    """Open the engine a spec names (see the module docstring); loads the model now.

    ``config`` is the settings dict (default: :func:`baize_tui.config.load_config`): it gives
    ``model.max_ctx`` (cap on a GGUF's context) and ``[openai]`` ``base_url``/``api_key``.
    ``lora`` is a GGUF LoRA adapter applied on a GGUF model at load (llama.cpp only).
    Raises :class:`UserError` for a spec that names nothing usable.
    """
    if config is None:
        from baize_tui.config import load_config

        config = load_config()
    spec = spec.strip()
    if not spec:
        raise UserError(f"empty model spec; give {SPEC_HELP}")
    kind, sep, rest = spec.partition(":")
    if lora and sep and kind in ("openai", "hf"):
        raise UserError(f"--lora applies a GGUF adapter on a GGUF model, not on {kind}:…; for "
                        f"hf: give the adapter as hf:BASE+LORA")
    if sep and kind == "openai":
        from baize_tui.engines.openai_api import OpenAIEngine

        section = config.get("openai", {})
        return OpenAIEngine(
            rest,
            base_url=base_url or section.get("base_url") or None,
            # The environment wins over the config file, as usual for secrets.
            api_key=os.environ.get("OPENAI_API_KEY") or section.get("api_key") or None,
            n_ctx=int(n_ctx or section.get("n_ctx", 0) or 0),
        )
    if sep and kind == "hf":
        from baize_tui.engines.hf import HFEngine

        base, _, lora = rest.partition("+")
        return HFEngine(base, lora or None)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        from baize_tui.engines.llama import LlamaEngine

        max_ctx = int(config.get("model", {}).get("max_ctx", 4096) or 4096)
        return LlamaEngine(path, max_ctx=max_ctx, n_ctx=n_ctx, lora=lora)
    if path.exists():
        raise UserError(f"{spec}: is a directory; give the path of a .gguf file")
    raise UserError(f"{spec}: no such model file; give {SPEC_HELP}")
