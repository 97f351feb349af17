"""Does a GGUF LoRA adapter fit a GGUF model? Checked from the two files' headers only.

llama.cpp refuses an adapter made for another model with a bare "failed to load" (or, for a
matching shape on another model, applies it silently); this check names the file and what
differs first: the architecture, a tensor the model does not have, or a shape that does not
line up (``X.lora_a`` is ``[n_in, r]`` and ``X.lora_b`` ``[r, n_out]`` in ggml order, for a
model tensor ``X`` of ``[n_in, n_out]``; for ``token_embd.weight`` llama.cpp expects A and B
flipped: ``X[0] == B[1]`` and ``X[1] == A[1]``). No Textual, no llama.cpp.
"""

from __future__ import annotations

from pathlib import Path

from baize_tui.errors import UserError


def _shapes(header: object) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(t.shape) for t in getattr(header, "tensors", [])}


def _pair_problem(
    name: str, a: tuple[int, ...], b: tuple[int, ...] | None, base: tuple[int, ...] | None
) -> str | None:
    """What is wrong with the adapter pair for model tensor ``name`` (``None``: it fits)."""
    if b is None:
        return f"{name}.lora_a has no {name}.lora_b"
    if base is None:
        return f"the model has no tensor {name}"
    if len(a) < 2 or len(b) < 2 or len(base) < 2:
        return f"{name}: not a matrix"
    if name.endswith("token_embd.weight"):  # llama.cpp keeps A and B flipped for embeddings
        if base[0] != b[1] or base[1] != a[1]:
            return f"{name}: the adapter's shape does not fit the model's {base[0]}x{base[1]}"
        return None
    if a[1] != b[0]:
        return f"{name}: lora_a rank {a[1]} but lora_b rank {b[0]}"
    if a[0] != base[0] or b[1] != base[1]:
        return f"{name}: the adapter is {a[0]}x{b[1]}, the model's tensor {base[0]}x{base[1]}"
    return None


def check_lora_matches(model: Path, adapter: Path) -> None:
    """Raise a :class:`UserError` naming ``adapter`` when it was not made for ``model``
    (another architecture, a tensor the model lacks, a shape that differs). Both files must
    be readable GGUFs; ``adapter`` is assumed checked as an adapter already."""
    from baize_tui.gguf_header import GGUFHeaderError, read_header

    try:
        base_header = read_header(model)
        lora_header = read_header(adapter)
    except (GGUFHeaderError, OSError) as exc:
        raise UserError(
            f"{adapter}: cannot check the adapter against {model.name} ({exc})"
        ) from None
    base_arch = base_header.get("general.architecture")
    lora_arch = lora_header.get("general.architecture")
    if lora_arch and base_arch and lora_arch != base_arch:
        raise UserError(
            f"{adapter}: a LoRA adapter for a {lora_arch} model, but "
            f"{model.name} is {base_arch}; use an adapter exported from this "
            f"model's base (`baize-convert lora`)"
        )
    base = _shapes(base_header)
    lora = _shapes(lora_header)
    pairs = [name[: -len(".lora_a")] for name in lora if name.endswith(".lora_a")]
    if not pairs:
        raise UserError(f"{adapter}: no LoRA tensors (*.lora_a / *.lora_b) in the adapter")
    for name in pairs:
        problem = _pair_problem(
            name, lora[f"{name}.lora_a"], lora.get(f"{name}.lora_b"), base.get(name)
        )
        if problem is not None:
            raise UserError(
                f"{adapter}: does not match {model.name} ({problem}); use an "
                f"adapter trained on this model's base"
            )
