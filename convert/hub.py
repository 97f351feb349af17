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
