"""baize_tui.models: discovery from real GGUF headers, and pulls through a real local hub.

The hub is tests/hub_server.py on 127.0.0.1, reached through HF_ENDPOINT; the GGUFs are made
by our converter from the tiny fixtures.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from hub_server import HubServer

from baize_tui import models
from baize_tui.config import load_config
from baize_tui.errors import OperationFailed, UserError
from baize_tui.paths import get_paths

GGUF_REPO = "someone/tiny-llama-GGUF"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def serve_gguf(hub: HubServer, tiny_gguf: Path) -> tuple[str, Path]:
    """A GGUF repo with two quants of the tiny model (the same bytes under two names)."""
    repo_dir = hub.add_repo(GGUF_REPO, files={"README.md": b"# tiny\n"})
    shutil.copy(tiny_gguf, repo_dir / "tiny-llama-Q4_K_M.gguf")
    shutil.copy(tiny_gguf, repo_dir / "tiny-llama-Q4_K_S.gguf")
    return "tiny-llama-Q4_K_M.gguf", repo_dir / "tiny-llama-Q4_K_M.gguf"


def leftovers() -> list[str]:
    models_dir = get_paths().models_dir
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []


# -- discovery ---------------------------------------------------------------------------------

def test_discovery_reads_real_headers_and_flags_broken_files(tiny_gguf: Path, tmp_path: Path,
                                                              hf_cache: Path) -> None:
    from baize_convert.inspect_gguf import inspect_gguf
    from baize_tui.config import set_value

    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(tiny_gguf, models_dir / "good.gguf")
    data = tiny_gguf.read_bytes()
    (models_dir / "cut-half.gguf").write_bytes(data[: len(data) // 2])
    (models_dir / "cut-header.gguf").write_bytes(data[:200])
    (models_dir / "not-gguf.gguf").write_bytes(b"<html>404</html>")
    (models_dir / "empty.gguf").write_bytes(b"")
    (models_dir / ".good.gguf.partial").write_bytes(data[:10])  # a download in progress: hidden
    extra = tmp_path / "my-models"
    (extra / "sub").mkdir(parents=True)
    shutil.copy(tiny_gguf, extra / "sub" / "mine.gguf")
    set_value("model.dirs", [str(extra)])
    snap = hf_cache / "models--org--tiny-GGUF" / "snapshots" / ("a" * 40)
    blobs = hf_cache / "models--org--tiny-GGUF" / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir(parents=True)
    shutil.copy(tiny_gguf, blobs / "abc")
    (snap / "cached.gguf").symlink_to(blobs / "abc")

    found = {m.name: m for m in models.list_models()}
    assert set(found) == {"good.gguf", "cut-half.gguf", "cut-header.gguf", "not-gguf.gguf",
                          "empty.gguf", "mine.gguf", "cached.gguf"}
    expected = inspect_gguf(tiny_gguf)
    for name, source in (("good.gguf", "models"), ("mine.gguf", "config"),
                         ("cached.gguf", "hf:org/tiny-GGUF")):
        m = found[name]
        assert not m.broken, m.error
        assert m.source == source
        assert m.architecture == expected["architecture"] == "llama"
        assert m.quant == expected["file_type"] == "F16"
        assert m.context_length == expected["context_length"]
        assert m.n_params == expected["n_params"]
        assert m.has_chat_template and m.baize_template
        assert m.kind == "model" and m.size == tiny_gguf.stat().st_size
    assert "truncated:" in found["cut-half.gguf"].error and "50%" in found["cut-half.gguf"].error
    assert "truncated header" in found["cut-header.gguf"].error
    assert "not a GGUF" in found["not-gguf.gguf"].error
    assert found["empty.gguf"].error == "empty file"
    as_json = found["cut-half.gguf"].to_dict()
    assert as_json["broken"] is True and as_json["path"].endswith("cut-half.gguf")
    assert [m.name for m in models.list_models(include_hf_cache=False)].count("cached.gguf") == 0


def test_default_rm_and_name_resolution(tiny_gguf: Path, tmp_path: Path) -> None:
    from baize_tui.config import set_value

    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(tiny_gguf, models_dir / "a.gguf")
    (models_dir / "broken.gguf").write_bytes(tiny_gguf.read_bytes()[:1000])
    other = tmp_path / "elsewhere"
    other.mkdir()
    shutil.copy(tiny_gguf, other / "a.gguf")
    shutil.copy(tiny_gguf, other / "b.gguf")

    chosen = models.set_default("a")  # by stem
    assert load_config()["model"]["default"] == str(models_dir / "a.gguf")
    assert chosen.is_default and [m.name for m in models.list_models() if m.is_default] == ["a.gguf"]
    with pytest.raises(UserError, match="broken"):
        models.set_default("broken.gguf")
    with pytest.raises(UserError, match="no model named 'nope'.*a.gguf"):
        models.find_model("nope")

    set_value("model.dirs", [str(other)])
    with pytest.raises(UserError, match="matches 2 files"):
        models.find_model("a.gguf")
    assert models.find_model(str(other / "a.gguf")).path == other / "a.gguf"  # a path is exact
    with pytest.raises(UserError, match="not in the models directory"):
        models.remove_model("b.gguf")
    assert (other / "b.gguf").exists()

    removed = models.remove_model(str(models_dir / "a.gguf"))
    assert removed.is_default and not (models_dir / "a.gguf").exists()
    assert load_config()["model"]["default"] == ""  # the default went with it


# -- pulling a GGUF ----------------------------------------------------------------------------

def test_pull_gguf_by_quant_with_progress(hub: HubServer, tiny_gguf: Path) -> None:
    name, source = serve_gguf(hub, tiny_gguf)
    calls: list[tuple[str, int, int | None]] = []
    path = models.pull(GGUF_REPO, quant="q4", progress=lambda *a: calls.append(a))
    assert path == get_paths().models_dir / name
    assert sha256(path) == sha256(source)
    assert leftovers() == [name]  # no partial or state file left
    size = source.stat().st_size
    assert calls[-1] == (f"download {name}", size, size)
    done = [c[1] for c in calls]
    assert done == sorted(done) and all(c[2] == size for c in calls)
    listed = models.find_model(name)
    assert listed.quant == "F16" and listed.source == "models" and not listed.broken

    gets = sum(1 for r in hub.requests if r[0] == "GET" and r[1].endswith(name))
    assert models.pull(GGUF_REPO, name) == path  # already there: nothing downloaded again
    assert sum(1 for r in hub.requests if r[0] == "GET" and r[1].endswith(name)) == gets


def test_pull_picks_files_and_reports_bad_choices(hub: HubServer, tiny_gguf: Path) -> None:
    serve_gguf(hub, tiny_gguf)
    files = models.list_hub_files(GGUF_REPO)
    assert models.choose_gguf(files, GGUF_REPO, quant="Q4_K_S").path == "tiny-llama-Q4_K_S.gguf"
    with pytest.raises(UserError, match="2 matching .gguf files.*Q4_K_M.*Q4_K_S"):
        models.choose_gguf(files, GGUF_REPO)
    with pytest.raises(UserError, match="no .gguf file for quant 'q8_0'"):
        models.choose_gguf(files, GGUF_REPO, quant="q8_0")
    with pytest.raises(UserError, match="no such repository"):
        models.pull("nobody/nothing", "x.gguf")
    with pytest.raises(UserError, match="no such file"):
        models.pull(GGUF_REPO, "missing.gguf")
    with pytest.raises(UserError, match="only .gguf"):
        models.pull(GGUF_REPO, "README.md")
    hub.add_repo("someone/hf-weights", files={"config.json": b"{}"})
    with pytest.raises(UserError, match="no .gguf files.*baize-convert"):
        models.pull("someone/hf-weights")


def test_dropped_connection_resumes_with_range(hub: HubServer, tiny_gguf: Path) -> None:
    name, source = serve_gguf(hub, tiny_gguf)
    cut = source.stat().st_size * 2 // 5
    hub.drop_after(f"{GGUF_REPO}/{name}", cut, times=2)
    path = models.pull(GGUF_REPO, name)
    assert sha256(path) == sha256(source)
    ranges = [r[2] for r in hub.requests if r[0] == "GET" and r[1].endswith(name)]
    assert ranges[0] is None and len(ranges) == 3
    assert all(r and r.startswith("bytes=") and int(r[6:-1]) > 0 for r in ranges[1:]), ranges


def test_interrupted_pull_resumes_in_the_next_run(hub: HubServer, tiny_gguf: Path) -> None:
    name, source = serve_gguf(hub, tiny_gguf)
    size = source.stat().st_size
    hub.drop_after(f"{GGUF_REPO}/{name}", size // 3)
    with pytest.raises(OperationFailed, match="interrupted at .*run the same pull again"):
        models.pull_gguf(GGUF_REPO, name, retries=0)
    partial = get_paths().models_dir / f".{name}.partial"
    assert not (get_paths().models_dir / name).exists()
    have = partial.stat().st_size
    assert 0 < have <= size // 3

    # Cancelling (the TUI's stop button) also keeps what was downloaded.
    cancel = threading.Event()

    def stop_soon(stage: str, done: int, total: int | None) -> None:
        if done > have:
            cancel.set()

    with pytest.raises(models.PullCancelled, match="pull again to resume"):
        models.pull_gguf(GGUF_REPO, name, progress=stop_soon, cancel=cancel)
    assert partial.stat().st_size > have
    have = partial.stat().st_size

    hub.requests.clear()
    path = models.pull_gguf(GGUF_REPO, name)
    assert sha256(path) == sha256(source)
    gets = [r for r in hub.requests if r[0] == "GET"]
    assert gets == [("GET", f"/{GGUF_REPO}/resolve/main/{name}", f"bytes={have}-")]
    assert leftovers() == [name]


def test_partial_of_a_changed_file_is_not_resumed(hub: HubServer, tiny_gguf: Path) -> None:
    name, source = serve_gguf(hub, tiny_gguf)
    hub.drop_after(f"{GGUF_REPO}/{name}", 1000)
    with pytest.raises(OperationFailed, match="interrupted"):
        models.pull_gguf(GGUF_REPO, name, retries=0)
    data = bytearray(source.read_bytes())
    data[:1000] = bytes(1000)  # the repo gets a new upload of that file
    source.write_bytes(bytes(data))
    hub.requests.clear()
    path = models.pull_gguf(GGUF_REPO, name)
    assert path.read_bytes() == bytes(data)
    assert [r[2] for r in hub.requests if r[0] == "GET"] == [None]


def test_checksum_mismatch_is_rejected_and_nothing_is_left(hub: HubServer,
                                                           tiny_gguf: Path) -> None:
    name, _ = serve_gguf(hub, tiny_gguf)
    hub.corrupt(f"{GGUF_REPO}/{name}")
    with pytest.raises(OperationFailed, match="checksum mismatch .*sha256"):
        models.pull(GGUF_REPO, name)
    assert leftovers() == []


def test_offline_and_unreachable_hub_give_one_clear_line(tiny_gguf: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(tiny_gguf, models_dir / "local.gguf")
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # conftest's default
    with pytest.raises(OperationFailed, match="HF_HUB_OFFLINE is set.*models list"):
        models.pull(GGUF_REPO, "x.gguf")
    with pytest.raises(OperationFailed, match="HF_HUB_OFFLINE"):
        models.plan_recipe("project-baize/baize-lora-7B")
    assert [m.name for m in models.list_models()] == ["local.gguf"]  # the local list still works

    import huggingface_hub.constants as hf_constants

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", dead)
    with pytest.raises(OperationFailed, match="cannot reach the Hugging Face hub at .*check the"):
        models.pull(GGUF_REPO, "x.gguf")
    with pytest.raises(OperationFailed, match="cannot reach"):
        models.pull(GGUF_REPO, quant="q4")


# -- recipes -----------------------------------------------------------------------------------

def test_lora_recipe_end_to_end(hub: HubServer, tiny: dict[str, Path], tmp_path: Path,
                                hf_cache: Path) -> None:
    """project-baize/baize-lora-7B through the local hub: base + adapter → merged GGUF."""
    from llama_cpp import Llama

    from baize_convert.pipeline import MergeRequest, run_merge

    hub.add_repo("huggyllama/llama-7b", tiny["llama"])
    hub.add_repo("project-baize/baize-lora-7B", tiny["lora_v1"])
    plan = models.plan_recipe("project-baize/baize-lora-7B", "q8_0")
    assert plan.kind == "lora" and plan.base == "huggyllama/llama-7b"
    assert plan.output == get_paths().models_dir / "baize-lora-7B-Q8_0.gguf"
    weights = {f.path for f in plan.downloads}
    assert {"adapter_model.bin", "adapter_config.json", "model.safetensors",
            "tokenizer.model", "config.json"} <= weights
    text = plan.describe()
    assert "download" in text and "disk" in text and "time" in text and str(plan.output) in text
    assert plan.download_bytes == sum(f.size for f in plan.downloads)

    stages: list[str] = []
    out = models.run_recipe(plan, progress=lambda s, d, t: stages.append(s))
    assert out == plan.output and out.exists()
    assert stages[0].startswith("download") and stages[-1].startswith("convert")
    assert leftovers() == [out.name]
    listed = models.find_model(out.name)
    assert listed.quant == "Q8_0" and listed.baize_template and not listed.broken

    # The same bytes as baize-convert run on the local directories.
    direct = tmp_path / "direct.gguf"
    run_merge(MergeRequest(base=str(tiny["llama"]), loras=[str(tiny["lora_v1"])], quant="q8_0",
                           output=direct, name="baize-lora-7B"), quiet=True)
    assert sha256(direct) == sha256(out)

    llm = Llama(str(out), n_ctx=128, verbose=False, seed=0)
    reply = llm.create_completion("Hello", max_tokens=4, temperature=0.0)
    assert reply["usage"]["completion_tokens"] >= 1
    del llm

    with pytest.raises(UserError, match="exists"):
        models.run_recipe(plan)


def test_v2_recipe_converts_hf_weights(hub: HubServer, tiny: dict[str, Path]) -> None:
    hub.add_repo("project-baize/baize-v2-7b", tiny["llama_decapoda"])
    out = models.pull("project-baize/baize-v2-7b", quant="f16")
    assert out == get_paths().models_dir / "baize-v2-7b-F16.gguf"
    m = models.find_model("baize-v2-7b-F16")
    assert m.quant == "F16" and m.architecture == "llama" and not m.broken
    # decapoda's config.json says float16: the estimate is from the fp16 .bin shards
    plan = models.plan_recipe("project-baize/baize-v2-7b", "q4_0")
    assert plan.kind == "merged" and plan.base is None
    assert abs(plan.n_params - m.n_params) / m.n_params < 0.1


def test_recipe_downloads_only_the_weights_it_needs() -> None:
    def listing(*names: str) -> list[models.HubFile]:
        return [models.HubFile("r/x", n, 10, None) for n in names]

    both = listing("config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
                   "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json",
                   "tokenizer.model", "README.md", "sub/other.bin")
    assert [f.path for f in models._weight_files(both)] == [
        "config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
        "tokenizer.model"]
    bins = listing("config.json", "pytorch_model-00001-of-00002.bin", "pytorch_model.bin.index.json")
    assert len(models._weight_files(bins)) == 3
    adapter = listing("adapter_config.json", "adapter_model.bin", "adapter_model.safetensors")
    assert [f.path for f in models._weight_files(adapter)] == ["adapter_config.json",
                                                               "adapter_model.safetensors"]


def test_non_lfs_files_are_checked_by_git_blob_id(hub: HubServer, tiny_gguf: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import hub_server

    monkeypatch.setattr(hub_server, "LFS_SUFFIXES", set())  # a GGUF committed without LFS
    name, source = serve_gguf(hub, tiny_gguf)
    assert sha256(models.pull(GGUF_REPO, name)) == sha256(source)
    other = "tiny-llama-Q4_K_S.gguf"
    hub.corrupt(f"{GGUF_REPO}/{other}")
    with pytest.raises(OperationFailed, match="checksum mismatch .*git-sha1"):
        models.pull(GGUF_REPO, other)
    assert leftovers() == [name]


def test_a_second_pull_of_the_same_file_is_refused_while_one_runs(hub: HubServer,
                                                                   tiny_gguf: Path) -> None:
    name, source = serve_gguf(hub, tiny_gguf)
    started, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow(stage: str, done: int, total: int | None) -> None:
        if done:
            started.set()
            release.wait(10)

    def first() -> None:
        try:
            models.pull_gguf(GGUF_REPO, name, progress=slow)
        except BaseException as exc:  # reported below
            errors.append(exc)

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert started.wait(10)
        with pytest.raises(UserError, match="another pull .* is running"):
            models.pull_gguf(GGUF_REPO, name)
    finally:
        release.set()
        worker.join(10)
    assert not errors and sha256(get_paths().models_dir / name) == sha256(source)


def test_a_path_works_as_a_name_on_a_fresh_install(tiny_gguf: Path, tmp_path: Path) -> None:
    """No default set yet: set_default/remove by path must not trip over the empty default."""
    copy = get_paths().models_dir / "fresh.gguf"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(tiny_gguf, copy)
    assert models.find_model(str(copy)).is_default is False
    assert models.set_default(str(copy)).path == copy
    assert models.find_model(str(copy)).is_default is True
