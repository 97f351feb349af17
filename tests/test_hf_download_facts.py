"""The two facts about huggingface_hub's own download that ``baize_tui/models/downloader.py``
is built around (see its docstring), checked against the installed release through the local
hub. When one fails, huggingface_hub changed: re-read ``_download_to_tmp_and_move`` and
``http_get`` in its ``file_download.py``; ``hf_hub_download`` may then do the transfer itself.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pytest
from hub_server import HubServer

REPO = "someone/tiny-llama-GGUF"
NAME = "tiny-llama-Q8_0.gguf"


class Stop(Exception):
    """Raised from the progress bar, as a cancel button would."""


class CancellingBar:
    """A ``tqdm_class`` whose first update cancels the download."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __enter__(self) -> CancellingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, n: float | None = 1) -> None:
        raise Stop

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def served(hub: HubServer, tiny_gguf: Path) -> Path:
    repo = hub.add_repo(REPO)
    shutil.copy(tiny_gguf, repo / NAME)
    return repo / NAME


def test_hf_hub_download_keeps_nothing_of_a_cancelled_download(hub: HubServer, tiny_gguf: Path,
                                                                 hf_cache: Path) -> None:
    from huggingface_hub import hf_hub_download

    served(hub, tiny_gguf)
    with pytest.raises(Stop):
        hf_hub_download(REPO, NAME, cache_dir=hf_cache, tqdm_class=CancellingBar)  # type: ignore[arg-type]
    left = [p.name for p in hf_cache.rglob("*") if p.is_file() and "incomplete" in p.name]
    assert left == [], "huggingface_hub now keeps partial downloads: it may resume them"


def test_hf_hub_download_does_not_check_the_sha256(hub: HubServer, tiny_gguf: Path,
                                                    hf_cache: Path) -> None:
    from huggingface_hub import hf_hub_download

    source = served(hub, tiny_gguf)
    hub.corrupt(f"{REPO}/{NAME}")  # same length, one byte flipped, the true sha256 advertised
    path = Path(hf_hub_download(REPO, NAME, cache_dir=hf_cache))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()
    assert hashlib.sha256(path.read_bytes()).hexdigest() != expected, \
        "huggingface_hub now verifies the sha256 of what it downloads"
