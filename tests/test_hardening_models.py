"""Hardening, model files: nothing but a regular file is opened, a crafted header cannot
exhaust the stack, a header without tensors is no model, and the messages say what is wrong."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hardening_helpers import one_error, run, tui

from baize_tui.paths import get_paths


def gguf_tensorless(path: Path, arch: str = "llama") -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(128)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def gguf_deep_arrays(path: Path, depth: int = 100_000) -> Path:
    """A header whose one key holds arrays nested ``depth`` deep."""
    key = b"general.evil"
    body = struct.pack("<4sIQQ", b"GGUF", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    body += struct.pack("<I", 9)  # value type: array
    body += struct.pack("<IQ", 9, 1) * depth  # of arrays, one item each ...
    body += struct.pack("<IQ", 4, 0)  # ... ending in an empty uint32 array
    path.write_bytes(body)
    return path


def test_a_fifo_named_like_a_model_is_refused_not_opened(tmp_path: Path) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    one_error(tui("ask", "-m", str(fifo), "hi", timeout=60), 2, str(fifo), "FIFO",
              "not a regular file")
    out = run("baize-convert", "inspect", str(fifo), timeout=60)
    assert out.returncode != 0 and "Traceback" not in out.stderr and "FIFO" in out.stderr


def test_deeply_nested_arrays_are_a_clear_error(tmp_path: Path) -> None:
    bad = gguf_deep_arrays(tmp_path / "deep.gguf")
    line = one_error(tui("ask", "-m", str(bad), "hi"), 1, str(bad), "nested")
    assert "RecursionError" not in line
    out = run("baize-convert", "inspect", str(bad))
    assert out.returncode != 0 and "Traceback" not in out.stderr and "nested" in out.stderr


def test_a_header_without_tensors_is_no_model(baize_home: Path) -> None:
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    empty = gguf_tensorless(models_dir / "hollow.gguf")
    listed = tui("models", "list")
    assert listed.returncode == 0 and "hollow.gguf" in listed.stdout + listed.stderr
    assert "no tensors" in listed.stdout + listed.stderr
    one_error(tui("models", "default", "hollow.gguf"), 2, str(empty), "no tensors")
    from baize_tui import models

    assert models.describe(empty).broken


def test_a_context_too_large_for_memory_says_so(tiny_gguf: Path) -> None:
    asked = 10**11  # estimated far beyond any machine's memory: refused before loading
    line = one_error(tui("ask", "-m", str(tiny_gguf), "--n-ctx", str(asked), "hi"), 2,
                     str(tiny_gguf), "too large for memory", f"{asked:,}")
    assert "damaged" not in line


def test_a_failed_load_with_a_big_context_is_not_called_damage() -> None:
    from baize_tui.model_checks import load_failure

    msg = load_failure(Path("m.gguf"), ValueError("Failed to create llama_context"), 10**8, 2048)
    assert "100,000,000" in msg and "too large for memory" in msg and "damaged" not in msg
    assert "damaged" in load_failure(Path("m.gguf"), ValueError("bad"), 2048, 2048)


def test_models_rm_of_a_link_in_the_models_dir_removes_the_link_only(tiny_gguf: Path,
                                                                     baize_home: Path) -> None:
    models_dir = get_paths().models_dir
    models_dir.mkdir(parents=True)
    link = models_dir / "linked.gguf"
    link.symlink_to(tiny_gguf)
    out = tui("models", "rm", "linked.gguf")
    assert out.returncode == 0, out.stderr
    assert "not in the models directory" not in out.stderr and "target" in out.stdout
    assert not link.exists() and not link.is_symlink() and tiny_gguf.exists()


def test_models_rm_outside_names_the_real_directory(tiny_gguf: Path, tmp_path: Path) -> None:
    from baize_tui.config import set_value

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "mine.gguf").symlink_to(tiny_gguf)
    set_value("model.dirs", [str(outside)])
    line = one_error(tui("models", "rm", "mine.gguf"), 2, str(outside.resolve()))
    assert "but in " + str(get_paths().models_dir) not in line
    assert (outside / "mine.gguf").is_symlink()


@pytest.mark.parametrize(("repo", "file", "needle"), [
    ("../../etc/passwd", "x.gguf", "not a Hugging Face repo id"),
    ("/etc", "x.gguf", "not a Hugging Face repo id"),
    ("owner/name", "../../../etc/passwd.gguf", "not a file name inside the repo"),
    ("owner/name", "/abs/x.gguf", "not a file name inside the repo"),
    ("a--b/c", None, "not a Hugging Face repo id"),
])
def test_pull_refuses_names_that_are_not_hub_names(repo: str, file: str | None,
                                                   needle: str) -> None:
    args = ["models", "pull", repo] + ([file] if file else [])
    one_error(tui(*args), 2, needle)


def test_disk_refusals_state_the_margin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from collections import namedtuple

    from baize_convert import pipeline

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 2 * 1024**2))
    with pytest.raises(Exception, match="safety margin") as info:
        pipeline.check_disk(tmp_path, 900 * 1024, "writing x.gguf")
    assert "64.00 MiB safety margin" in str(info.value) and str(tmp_path) in str(info.value)
