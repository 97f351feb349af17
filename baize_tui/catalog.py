"""The known Baize models: one place for their hub ids, kinds and bases (BAIZE.md §2)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    """A released Baize model on the Hugging Face hub."""

    repo: str
    kind: str  # "lora" (adapter only) or "merged" (full HF weights)
    base: str | None  # the HF base a LoRA adapter belongs on
    params: str  # size label, e.g. "7B"


KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel("project-baize/baize-lora-7B", "lora", "huggyllama/llama-7b", "7B"),
    KnownModel("project-baize/baize-lora-13B", "lora", "huggyllama/llama-13b", "13B"),
    KnownModel("project-baize/baize-lora-30B", "lora", "huggyllama/llama-30b", "30B"),
    KnownModel("project-baize/baize-healthcare-lora-7B", "lora", "huggyllama/llama-7b", "7B"),
    KnownModel("project-baize/baize-v2-7b", "merged", None, "7B"),
    KnownModel("project-baize/baize-v2-13b", "merged", None, "13B"),
)


def find_known(repo: str) -> KnownModel | None:
    """The known model with this hub id (case-insensitive), if any."""
    wanted = repo.strip().rstrip("/").lower()
    return next((m for m in KNOWN_MODELS if m.repo.lower() == wanted), None)


def base_for_adapter(repo: str) -> str | None:
    """The HF base model a known Baize adapter needs, or None when unknown."""
    known = find_known(repo)
    return known.base if known and known.kind == "lora" else None
