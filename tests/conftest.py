"""Shared fixtures: tiny models built offline once and cached in a temp dir, and an
isolated ``BAIZE_HOME`` for every test."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_train_extra() -> None:
    """Skip (outside CI) or fail (in CI) when the ``train`` extra is not installed."""
    missing = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        reason = f"needs the train extra (pip install -e '.[train]'): missing {', '.join(missing)}"
        if IN_CI:
            pytest.fail(f"CI installs every extra, yet {reason}")
        pytest.skip(reason)


def _fixture_key() -> str:
    """Changes whenever the builder or the libraries that shape its output change."""
    from importlib.metadata import version

    digest = hashlib.sha256((TESTS_DIR / "tinymodels.py").read_bytes())
    digest.update((TESTS_DIR / "tinybpe.py").read_bytes())
    for dist in ("torch", "transformers", "peft", "sentencepiece", "safetensors", "tokenizers"):
        digest.update(version(dist).encode())
    digest.update(sys.version.encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny() -> dict[str, Path]:
    """Every tiny checkpoint, tokenizer and adapter (see tests/tinymodels.py), by name.

    Built once per machine and library versions into the system temp dir; a build happens in
    a private directory that is renamed into place, so parallel or interrupted runs are safe.
    """
    require_train_extra()
    import tinymodels

    names = ["tokenizer", "llama", "llama_gqa", "llama_bin", "llama_decapoda", "llama_wide",
             "lora_v1", "lora_st", "lora_gqa", "lora_bin_base", "lora_wide"]
    return _cached_build("baize-tui-fixtures", names, tinymodels.build_all)


@pytest.fixture(scope="session")
def family() -> dict[str, Path]:
    """Today's LLaMA-family checkpoints (Llama 3-, SmolLM- and Mistral-shaped) with their
    tokenizers and adapters (tests/tinymodels.py ``build_family``), by name; cached like
    :func:`tiny`."""
    require_train_extra()
    import tinymodels

    return _cached_build("baize-tui-family", tinymodels.FAMILY_NAMES, tinymodels.build_family)


def _cached_build(prefix: str, names: list[str], build) -> dict[str, Path]:
    root = Path(tempfile.gettempdir()) / f"{prefix}-{_fixture_key()}"
    if not (root / "complete").exists():
        building = Path(tempfile.mkdtemp(prefix=f"{prefix}-build-"))
        try:
            built = build(building)
            (building / "names").write_text("\n".join(f"{k}={v.name}" for k, v in built.items()))
            (building / "complete").write_text("ok")
            try:
                building.rename(root)
            except OSError:  # another run finished first; use theirs
                shutil.rmtree(building, ignore_errors=True)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    mapping = dict(line.split("=", 1) for line in (root / "names").read_text().splitlines())
    assert set(mapping) == set(names), "fixture set changed without a key change"
    return {name: root / sub for name, sub in mapping.items()}


@pytest.fixture(autouse=True)
def baize_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty BAIZE_HOME, so nothing touches the user's files."""
    home = tmp_path / "baize-home"
    monkeypatch.setenv("BAIZE_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_gguf(tiny: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An F16 GGUF of the tiny LLaMA (``tiny["llama"]``), made by our converter."""
    from baize_convert.pipeline import MergeRequest, run_merge

    out = tmp_path_factory.mktemp("gguf") / "tiny-llama-F16.gguf"
    run_merge(MergeRequest(base=str(tiny["llama"]), loras=[], quant="f16", output=out), quiet=True)
    return out


@pytest.fixture(autouse=True)
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private Hugging Face cache, so no test reads or fills the user's."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hf_cache: Path):
    """The local hub (tests/hub_server.py) on 127.0.0.1, online: HF_ENDPOINT set,
    HF_HUB_OFFLINE unset.

    huggingface_hub copies HF_ENDPOINT, HF_HUB_OFFLINE and the cache path into
    ``huggingface_hub.constants`` when first imported, so those are patched too.
    """
    import huggingface_hub.constants as hf_constants
    from hub_server import HubServer

    from baize_tui import models

    server = HubServer(tmp_path / "hub-repos").start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.url)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_cache))
    monkeypatch.setattr(models.downloader, "RETRY_WAIT", 0.01)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chat_ggufs() -> dict[str, Path]:
    """Tiny GGUFs with real chat formats (see tests/tiny_chat_ggufs.py), by name.

    No torch needed: gguf-py writes them in about a second each. Cached in the system temp
    dir under a key of the builder's source and gguf's version; built in a private directory
    that is renamed into place.
    """
    from importlib.metadata import version

    import tiny_chat_ggufs

    digest = hashlib.sha256((TESTS_DIR / "tiny_chat_ggufs.py").read_bytes())
    digest.update(version("gguf").encode())
    root = Path(tempfile.gettempdir()) / f"baize-tui-chat-ggufs-{digest.hexdigest()[:16]}"
    names = [*tiny_chat_ggufs.FORMATS, "chatml_512"]
    if not (root / "complete").exists():
        building = Path(tempfile.mkdtemp(prefix="baize-tui-chat-ggufs-build-"))
        try:
            for name in tiny_chat_ggufs.FORMATS:
                tiny_chat_ggufs.build_chat_gguf(building / f"{name}.gguf", name)
            tiny_chat_ggufs.build_chat_gguf(building / "chatml_512.gguf", "chatml", n_ctx=512)
            (building / "complete").write_text("ok")
            try:
                building.rename(root)
            except OSError:  # another run finished first; use theirs
                shutil.rmtree(building, ignore_errors=True)
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise
    return {name: root / f"{name}.gguf" for name in names}
