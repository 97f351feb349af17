"""Hardening, baize-convert: an output that is an input is refused (``--force`` or not), an
adapter naming another base is warned about, odd configs and hostile pickles are one line."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from hardening_helpers import one_error, run, tui


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(tiny: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """Private copies: a regression must never damage the shared fixtures."""
    base = tmp_path / "base"
    lora = tmp_path / "lora"
    shutil.copytree(tiny["llama"], base)
    shutil.copytree(tiny["lora_v1"], lora)
    return base, lora


def merge(base: Path, lora: Path | None, output: Path, *extra: str):  # noqa: ANN201
    args = ["merge", "--base", str(base), "-o", str(output), *extra]
    if lora is not None:
        args += ["--lora", str(lora)]
    return run("baize-convert", *args)


@pytest.mark.parametrize("which", ["lora_bin", "base_weights", "base_config", "new_name"])
def test_an_output_onto_an_input_is_refused_even_with_force(inputs: tuple[Path, Path],
                                                            which: str) -> None:
    base, lora = inputs
    target = {"lora_bin": lora / "adapter_model.bin", "base_weights": base / "model.safetensors",
              "base_config": base / "config.json", "new_name": base / "merged.safetensors"}[which]
    before = {p: digest(p) for p in [*base.iterdir(), *lora.iterdir()]}
    one_error(merge(base, lora, target, "--force"), 2, str(target), "input",
              prog="baize-convert")
    assert {p: digest(p) for p in [*base.iterdir(), *lora.iterdir()]} == before
    assert not [p for p in base.iterdir() if p.name.startswith(".")]


def test_a_hard_link_to_an_input_is_refused(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    base, lora = inputs
    alias = tmp_path / "alias.gguf"
    os.link(base / "model.safetensors", alias)
    before = digest(alias)
    one_error(merge(base, lora, alias, "--force"), 2, str(alias), "input file",
              prog="baize-convert")
    assert digest(alias) == before


def test_a_gguf_next_to_the_inputs_is_still_allowed(inputs: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    base, lora = inputs
    out = tmp_path / "merged.gguf"
    result = merge(base, lora, out)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


def test_an_adapter_for_another_base_is_named_before_merging(inputs: tuple[Path, Path],
                                                              tmp_path: Path) -> None:
    base, lora = inputs
    config = json.loads((lora / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/another-model-13b"
    (lora / "adapter_config.json").write_text(json.dumps(config))
    result = merge(base, lora, tmp_path / "m.gguf")
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warning) == 1
    assert "someone/another-model-13b" in warning[0] and str(base) in warning[0]


@pytest.mark.parametrize("content", ["[1, 2, 3]", '"lora"', "null"])
def test_an_adapter_config_that_is_not_an_object(inputs: tuple[Path, Path], tmp_path: Path,
                                                 content: str) -> None:
    base, lora = inputs
    (lora / "adapter_config.json").write_text(content)
    one_error(merge(base, lora, tmp_path / "m.gguf"), 2, "adapter_config.json",
              "expected a JSON object", prog="baize-convert")


def test_a_base_config_that_is_not_an_object(inputs: tuple[Path, Path], tmp_path: Path) -> None:
    base, _ = inputs
    (base / "config.json").write_text("[]")
    one_error(merge(base, None, tmp_path / "m.gguf"), 2, "config.json", "expected a JSON object",
              prog="baize-convert")


class Evil:
    def __reduce__(self):  # noqa: ANN204 - pickle protocol
        return (os.system, ("echo pwned > /dev/null",))


def test_a_malicious_pickle_is_one_line_everywhere(inputs: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    import torch

    base, lora = inputs
    torch.save({"weights": Evil()}, lora / "adapter_model.bin")
    merged = merge(base, lora, tmp_path / "m.gguf")
    assert merged.returncode != 0 and "Traceback" not in merged.stderr
    assert "adapter_model.bin" in merged.stderr
    asked = tui("ask", "-m", f"hf:{base}+{lora}", "hi")
    one_error(asked, 2, str(lora))
