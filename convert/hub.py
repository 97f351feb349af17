"""Resolve a local directory or a Hugging Face hub id to a directory on disk."""

from __future__ import annotations

import os
import re
from pathlib import Path

from baize_convert import ConvertError, ConvertFailed

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_dir(spec: str, *, what: str, allow_patterns: list[str] | None = None) -> Path:
    """Return ``spec`` as a directory: an existing path, or a hub id downloaded (or cached).

    ``what`` names the role ("base model", "LoRA adapter") in error messages.
    """
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConvertError(f"{what} {spec}: expected a directory, got a file")
        return path
    if not _HUB_ID.match(spec):
        raise ConvertError(f"{what} {spec}: no such directory, and not a hub id like org/name")
    return _download(spec, what=what, allow_patterns=allow_patterns)


# Everything a LLaMA checkpoint needs but its weights.
MODEL_META = ["config.json", "generation_config.json", "tokenizer.model", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json"]
SAFETENSORS_WEIGHTS = ["*.safetensors", "model.safetensors.index.json"]
BIN_WEIGHTS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


def resolve_model_dir(spec: str, *, what: str, weights: bool = True) -> Path:
    """A HF model directory: local, or downloaded with safetensors weights where the repo has
    them and pickled ``.bin`` shards only where it has not (repos often hold both, which would
    double a 13 GB download). ``weights=False`` fetches the config and tokenizer only."""
    path = Path(spec).expanduser()
    if path.exists() or not weights:
        return resolve_dir(spec, what=what, allow_patterns=MODEL_META)
    directory = resolve_dir(spec, what=what, allow_patterns=MODEL_META + SAFETENSORS_WEIGHTS)
    if not any(directory.glob("*.safetensors")):
        directory = resolve_dir(spec, what=what, allow_patterns=MODEL_META + BIN_WEIGHTS)
    return directory


def _download(repo: str, *, what: str, allow_patterns: list[str] | None) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(repo, allow_patterns=allow_patterns))
    except LocalEntryNotFoundError:
        if offline:
            raise ConvertFailed(
                f"{what} {repo} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                "download it once while online, or pass a local directory"
            ) from None
        raise ConvertFailed(
            f"could not download {what} {repo}: the hub is unreachable and nothing is cached; "
            "check the network or pass a local directory"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise ConvertFailed(f"{what} {repo}: {type(exc).__name__} on the hub ({exc})") from None
    except OSError as exc:
        raise ConvertFailed(f"could not download {what} {repo}: {exc}") from None
