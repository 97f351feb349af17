"""Cancelling a recipe's downloads: the same progress hook stops them, nothing is converted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from hub_server import HubServer

from baize_tui import models
from baize_tui.paths import get_paths


def test_a_recipe_download_stops_when_cancelled(hub: HubServer, tiny: dict[str, Path]) -> None:
    hub.add_repo("huggyllama/llama-7b", tiny["llama"])
    hub.add_repo("project-baize/baize-lora-7B", tiny["lora_v1"])
    plan = models.plan_recipe("project-baize/baize-lora-7B", "q8_0")
    cancel = threading.Event()
    seen: list[int] = []

    def progress(stage: str, done: int, total: int | None) -> None:
        seen.append(done)
        if stage.startswith("download") and done > 0:
            cancel.set()  # the user pressed Cancel once bytes came in

    with pytest.raises(models.PullCancelled, match="cancelled"):
        models.run_recipe(plan, progress=progress, cancel=cancel)
    assert not plan.output.exists()
    assert not any(p.suffix == ".gguf" for p in get_paths().models_dir.glob("*"))
    assert max(seen) < plan.download_bytes  # it stopped before everything was fetched

    # Not cancelled, the same plan completes (what was fetched is reused from the cache).
    out = models.run_recipe(plan)
    assert out == plan.output and out.exists()
