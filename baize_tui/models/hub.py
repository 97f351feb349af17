"""Ask the Hugging Face hub about repositories (headless; no Textual).

The endpoint and offline switches read from the environment now, one-line errors for everything
huggingface_hub and the network raise (:func:`hub_errors`), repository listings with sizes and
LFS sha256 (:func:`list_hub_files`) and the choice of one GGUF among them (:func:`choose_gguf`).
Downloading is :mod:`baize_tui.models.downloader`'s job.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from baize_tui.errors import OperationFailed, UserError

HUB_DEFAULT_ENDPOINT = "https://huggingface.co"


class PullCancelled(OperationFailed):
    """A download stopped by ``cancel``; the partial file stays for the next run to resume."""


def is_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read from the environment now."""
    values = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any((v or "").strip().lower() in ("1", "true", "yes", "on") for v in values)


def hub_endpoint() -> str:
    """The hub URL (HF_ENDPOINT, read now: huggingface_hub reads it once at import)."""
    return (os.environ.get("HF_ENDPOINT") or HUB_DEFAULT_ENDPOINT).rstrip("/")


def _offline_error(what: str) -> OperationFailed:
    return OperationFailed(
        f"cannot download {what}: HF_HUB_OFFLINE is set; unset it to download. "
        "Models already on disk still work (see `baize-tui models list`)"
    )


def _require_online(what: str) -> None:
    if is_offline():
        raise _offline_error(what)


def _transport_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn huggingface_hub and network exceptions into one-line baize-tui errors."""
    from huggingface_hub import errors as hf_errors

    try:
        yield
    except hf_errors.OfflineModeIsEnabled:
        raise _offline_error(what) from None
    except hf_errors.GatedRepoError:
        raise OperationFailed(f"{what}: the repository is gated; accept its license on the hub "
                              "and log in (`hf auth login`)") from None
    except hf_errors.RepositoryNotFoundError:
        raise UserError(f"{what}: no such repository on the hub (or it is private: log in "
                        "with `hf auth login`)") from None
    except hf_errors.RevisionNotFoundError:
        raise UserError(f"{what}: no such revision on the hub") from None
    except hf_errors.EntryNotFoundError:
        raise UserError(f"{what}: no such file in the repository") from None
    except hf_errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise OperationFailed(f"{what}: the hub answered HTTP {status}; try again later") from None
    except _transport_errors() as exc:
        raise OperationFailed(
            f"cannot reach the Hugging Face hub at {hub_endpoint()} ({type(exc).__name__}: {exc}); "
            "check the network. Models already on disk still work (see `baize-tui models list`)"
        ) from None


@dataclass(frozen=True)
class HubFile:
    """A file in a hub repository, with what the listing says about it."""

    repo: str
    path: str
    size: int | None
    sha256: str | None


def list_hub_files(repo: str, revision: str = "main") -> list[HubFile]:
    """Every file of a model repository, with sizes and LFS sha256 (one API call)."""
    _require_online(repo)
    from huggingface_hub import HfApi

    with hub_errors(repo):
        info = HfApi(endpoint=hub_endpoint()).model_info(repo, revision=revision,
                                                         files_metadata=True)
    return [HubFile(repo, s.rfilename, s.size, s.lfs.sha256 if s.lfs else None)
            for s in (info.siblings or [])]


def _quant_pattern(quant: str) -> re.Pattern[str]:
    from baize_convert.quantize import ALIASES

    label = ALIASES.get(quant.strip().lower(), quant.strip().lower()).upper()
    return re.compile(rf"(?<![A-Z0-9]){re.escape(label)}(?![A-Z0-9_])")


def choose_gguf(files: list[HubFile], repo: str, *, quant: str | None = None) -> HubFile:
    """The one .gguf in ``files`` matching ``quant`` (or the only one); errors list choices."""
    ggufs = [f for f in files if f.path.lower().endswith(".gguf")]
    if not ggufs:
        raise UserError(f"{repo} has no .gguf files; if it holds Hugging Face weights, convert "
                        f"them: baize-convert merge --base {repo} --quantize q4")
    pool = ggufs
    if quant:
        pattern = _quant_pattern(quant)
        pool = [f for f in ggufs if pattern.search(Path(f.path).name.upper())]
    if len(pool) == 1:
        return pool[0]
    listing = ", ".join(f.path for f in ggufs)
    if not pool:
        raise UserError(f"{repo} has no .gguf file for quant {quant!r}; it has: {listing}")
    raise UserError(f"{repo} has {len(pool)} matching .gguf files; name one (or use --quant): "
                    + ", ".join(f.path for f in pool))
