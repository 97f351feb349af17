"""Recipe downloads go through the same downloader as ``models pull``: a cancel keeps the
partial file and the next run resumes it with a Range request; a bad checksum is refused."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from hub_server import HubServer

from baize_tui import models
from baize_tui.errors import OperationFailed
from baize_tui.paths import get_paths

BASE = "huggyllama/llama-7b"
LORA = "project-baize/baize-lora-7B"


def serve_recipe(hub: HubServer, tiny: dict[str, Path]) -> models.RecipePlan:
    hub.add_repo(BASE, tiny["llama"])
    hub.add_repo(LORA, tiny["lora_v1"])
    return models.plan_recipe(LORA, "q8_0")


def blobs(hf_cache: Path, repo: str) -> Path:
    return hf_cache / f"models--{repo.replace('/', '--')}" / "blobs"


def test_a_recipe_download_stops_when_cancelled_and_resumes(
        hub: HubServer, tiny: dict[str, Path], hf_cache: Path) -> None:
    plan = serve_recipe(hub, tiny)
    big = max(plan.downloads, key=lambda f: f.size or 0)
    assert big.repo == BASE and big.size and big.size > 4 * 64 * 1024  # several chunks
    assert big.sha256  # an LFS file
    before = sum(f.size or 0 for f in plan.downloads[:plan.downloads.index(big)])
    cancel = threading.Event()
    seen: list[int] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        seen.append(done)
        if stage.startswith("download") and done > before:
            cancel.set()  # the user pressed Cancel once bytes of the big file came in

    with pytest.raises(models.PullCancelled, match="cancelled.*pull again to resume"):
        models.run_recipe(plan, progress=progress, cancel=cancel)
    assert not plan.output.exists()
    assert not any(p.suffix == ".gguf" for p in get_paths().models_dir.glob("*"))
    assert max(seen) < plan.download_bytes  # it stopped before everything was fetched
    partial = blobs(hf_cache, BASE) / f".{big.sha256}.partial"
    have = partial.stat().st_size
    assert 0 < have < big.size

    # Not cancelled, the same plan completes: finished files are reused from the cache and the
    # big one resumes where it stopped.
    hub.requests.clear()
    out = models.run_recipe(plan)
    assert out == plan.output and out.exists()
    gets = [r for r in hub.requests if r[0] == "GET" and "/resolve/" in r[1]]
    assert [r for r in gets if r[1].endswith(f"/{big.path}")] == [
        ("GET", f"/{BASE}/resolve/main/{big.path}", f"bytes={have}-")]
    fetched = {f"/{f.repo}/resolve/main/{f.path}" for f in plan.downloads[:plan.downloads.index(big)]}
    assert not [r for r in gets if r[1] in fetched]  # finished before the cancel: not again
    blob = blobs(hf_cache, BASE) / big.sha256
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == big.sha256
    assert not partial.exists()


def test_a_recipe_download_with_a_bad_checksum_is_refused(
        hub: HubServer, tiny: dict[str, Path], hf_cache: Path) -> None:
    plan = serve_recipe(hub, tiny)
    big = max(plan.downloads, key=lambda f: f.size or 0)
    assert big.sha256  # an LFS file
    hub.corrupt(f"{BASE}/{big.path}")
    with pytest.raises(OperationFailed, match=f"checksum mismatch for {BASE}/{big.path}.*sha256"):
        models.run_recipe(plan)
    assert not plan.output.exists()
    assert [p.name for p in blobs(hf_cache, BASE).iterdir() if big.sha256 in p.name] == []
