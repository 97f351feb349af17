"""baize-convert with hub ids, against a local hub on 127.0.0.1 (HF_ENDPOINT), then offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hub_server import HubServer

from baize_convert.verify import verify_gguf

BIN = Path(sys.executable).parent


def test_known_adapter_downloads_its_base_and_then_works_offline(tiny, tmp_path) -> None:
    with HubServer(tmp_path / "repos") as hub:
        hub.add_repo("huggyllama/llama-7b", tiny["llama"])
        hub.add_repo("project-baize/baize-lora-7B", tiny["lora_v1"])
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"))
        out = tmp_path / "online.gguf"
        # No --base: the known Baize adapter maps to huggyllama/llama-7b (BAIZE.md §2).
        args = [str(BIN / "baize-convert"), "merge", "--lora", "project-baize/baize-lora-7B",
                "-q", "q8_0"]
        run = subprocess.run(args + ["-o", str(out)], env=env, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        fetched = {path for method, path, _ in hub.requests if "/resolve/" in path}
        assert any("huggyllama/llama-7b" in p for p in fetched)
        assert any("baize-lora-7B" in p and "adapter_model.bin" in p for p in fetched)
    report = verify_gguf(out, str(tiny["llama"]), [str(tiny["lora_v1"])])
    assert report.ok, report
    # The hub is gone now: with HF_HUB_OFFLINE=1 the same command runs from the cache.
    offline = tmp_path / "offline.gguf"
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9")
    run = subprocess.run(args + ["-o", str(offline)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert offline.read_bytes() == out.read_bytes()
