"""``baize-tui models`` as a user runs it: real subprocesses, a real local hub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import HubServer

from baize_tui.paths import get_paths

BIN = Path(sys.executable).parent / "baize-tui"
REPO = "someone/tiny-llama-GGUF"


def run(*args: str, env: dict[str, str], stdin: str | None = None,
        preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "models", *args], capture_output=True, text=True, env=env,
                          input=stdin, timeout=120, preexec_fn=preexec)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The child's environment: this test's BAIZE_HOME, a private HF cache, offline."""
    return {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hf-cache"), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def online(env: dict[str, str], tmp_path: Path, tiny_gguf: Path):
    with HubServer(tmp_path / "hub-repos") as hub:
        repo = hub.add_repo(REPO)
        shutil.copy(tiny_gguf, repo / "tiny-llama-Q8_0.gguf")
        child = {**env, "HF_ENDPOINT": hub.url}
        child.pop("HF_HUB_OFFLINE")
        yield hub, child


def assert_one_line_error(out: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert out.returncode == code, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("baize-tui: error: ")
    for word in words:
        assert word in line, line


def test_list_default_rm(env: dict[str, str], tiny_gguf: Path) -> None:
    empty = run("list", env=env)
    assert empty.returncode == 0 and "no GGUF models found" in empty.stdout
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    shutil.copy(tiny_gguf, models_dir / "tiny.gguf")
    (models_dir / "cut.gguf").write_bytes(tiny_gguf.read_bytes()[:5000])

    out = run("default", "tiny", env=env)
    assert out.returncode == 0 and str(models_dir / "tiny.gguf") in out.stdout
    table = run(env=env)  # bare `models` lists
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["NAME", "QUANT", "CTX", "ARCH", "SIZE", "TEMPLATE", "SOURCE"]
    tiny_row = next(row for row in lines if " tiny.gguf " in row)
    assert tiny_row.startswith("*") and "F16" in tiny_row and "baize" in tiny_row
    assert any(row.startswith("!") and "cut.gguf" in row and "truncated" in row for row in lines)

    data = json.loads(run("list", "--json", env=env).stdout)
    by_name = {m["name"]: m for m in data}
    assert by_name["tiny.gguf"]["is_default"] and by_name["tiny.gguf"]["context_length"] > 0
    assert by_name["cut.gguf"]["broken"] and "truncated" in by_name["cut.gguf"]["error"]

    assert_one_line_error(run("default", "cut", env=env), 2, "broken")
    assert_one_line_error(run("rm", "nope", env=env), 2, "no model named 'nope'")
    out = run("rm", "tiny.gguf", env=env)
    assert out.returncode == 0 and "was the default" in out.stdout
    assert not (models_dir / "tiny.gguf").exists()
    assert "no default model" in run("default", env=env).stdout


def test_pull_offline_and_unreachable(env: dict[str, str]) -> None:
    assert_one_line_error(run("pull", REPO, "x.gguf", env=env), 1, "HF_HUB_OFFLINE")
    dead = {**env, "HF_ENDPOINT": "http://127.0.0.1:9"}
    dead.pop("HF_HUB_OFFLINE")
    assert_one_line_error(run("pull", REPO, "--quant", "q8_0", env=dead), 1, "cannot reach")


def test_pull_gguf(online) -> None:
    hub, child = online
    out = run("pull", REPO, "--quant", "q8", env=child)
    assert out.returncode == 0, out.stderr
    saved = get_paths().models_dir / "tiny-llama-Q8_0.gguf"
    assert f"saved {saved}" in out.stdout and saved.exists()
    listed = json.loads(run("list", "--json", env=child).stdout)
    assert [m["name"] for m in listed] == ["tiny-llama-Q8_0.gguf"]


def test_disk_full_leaves_no_file(online, tiny_gguf: Path) -> None:
    """A real write failure: the child may not write files past half the GGUF (RLIMIT_FSIZE)."""
    import resource
    import signal

    hub, child = online
    limit = tiny_gguf.stat().st_size // 2

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = run("pull", REPO, "tiny-llama-Q8_0.gguf", env=child, preexec=small_disk)
    assert_one_line_error(out, 1, "disk full", "deleted")
    models_dir = get_paths().models_dir
    assert sorted(p.name for p in models_dir.iterdir()) == []


def test_recipe_asks_before_converting(online, tiny: dict[str, Path]) -> None:
    hub, child = online
    hub.add_repo("huggyllama/llama-7b", tiny["llama"])
    hub.add_repo("project-baize/baize-lora-7B", tiny["lora_v1"])
    out = run("pull", "project-baize/baize-lora-7B", "--quant", "q8_0", env=child, stdin="")
    assert_one_line_error(out, 2, "--yes")
    assert "LoRA adapter for huggyllama/llama-7b" in out.stdout and "disk" in out.stdout
    assert not get_paths().models_dir.exists() or not any(get_paths().models_dir.iterdir())
    out = run("pull", "project-baize/baize-lora-7B", "--quant", "q8_0", "--yes", env=child)
    assert out.returncode == 0, out.stderr
    assert (get_paths().models_dir / "baize-lora-7B-Q8_0.gguf").exists()
