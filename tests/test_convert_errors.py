"""Every bad input to baize-convert ends in one clear message and leaves no output file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from baize_convert.cli import main as convert_main


def run(args: list[str], capsys) -> tuple[int, str]:
    code = convert_main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.suffix == ".gguf" or p.name.startswith("."))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_adapter_for_another_size_is_refused(tiny, out_dir, capsys) -> None:
    code, err = run(["merge", "--base", str(tiny["llama"]), "--lora", str(tiny["lora_wide"]),
                     "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2
    assert "model.layers.0.self_attn" in err and "different base model" in err
    assert leftovers(out_dir) == []


def test_adapter_targeting_missing_modules(tiny, tmp_path, out_dir, capsys) -> None:
    import torch

    lora = tmp_path / "lora-extra-layer"
    shutil.copytree(tiny["lora_v1"], lora)
    state = torch.load(lora / "adapter_model.bin", weights_only=True)
    state["base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight"] = torch.ones(8, 64)
    state["base_model.model.model.layers.7.self_attn.q_proj.lora_B.weight"] = torch.ones(64, 8)
    torch.save(state, lora / "adapter_model.bin")
    code, err = run(["merge", "--base", str(tiny["llama"]), "--lora", str(lora),
                     "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "model.layers.7.self_attn.q_proj.weight" in err and "does not have" in err
    assert leftovers(out_dir) == []


def test_non_llama_architecture(tiny, tmp_path, out_dir, capsys) -> None:
    base = tmp_path / "gpt2"
    shutil.copytree(tiny["llama"], base)
    config = json.loads((base / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (base / "config.json").write_text(json.dumps(config))
    code, err = run(["merge", "--base", str(base), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "not LLaMA" in err and "config.json" in err
    assert leftovers(out_dir) == []


def test_truncated_safetensors(tiny, tmp_path, out_dir, capsys) -> None:
    base = tmp_path / "truncated"
    shutil.copytree(tiny["llama"], base)
    weights = base / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, err = run(["merge", "--base", str(base), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "model.safetensors" in err and "truncated" in err
    assert leftovers(out_dir) == []
    weights.write_bytes(b"\x00" * 3)
    code, err = run(["merge", "--base", str(base), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "not a valid safetensors file" in err


def test_missing_shard(tiny, tmp_path, out_dir, capsys) -> None:
    base = tmp_path / "missing-shard"
    shutil.copytree(tiny["llama_gqa"], base)
    next(base.glob("model-00002-*.safetensors")).unlink()
    code, err = run(["merge", "--base", str(base), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "model-00002-of" in err and "missing" in err


def test_corrupt_bin_adapter(tiny, tmp_path, out_dir, capsys) -> None:
    lora = tmp_path / "corrupt-lora"
    shutil.copytree(tiny["lora_v1"], lora)
    data = (lora / "adapter_model.bin").read_bytes()
    (lora / "adapter_model.bin").write_bytes(data[: len(data) // 3])
    code, err = run(["merge", "--base", str(tiny["llama"]), "--lora", str(lora),
                     "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "adapter_model.bin" in err and "corrupt or truncated" in err


def test_empty_adapter(tiny, tmp_path, out_dir, capsys) -> None:
    import torch

    lora = tmp_path / "empty-lora"
    shutil.copytree(tiny["lora_v1"], lora)
    torch.save({}, lora / "adapter_model.bin")
    code, err = run(["merge", "--base", str(tiny["llama"]), "--lora", str(lora),
                     "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "no LoRA tensors" in err


def test_missing_tokenizer(tiny, tmp_path, out_dir, capsys) -> None:
    base = tmp_path / "no-tokenizer"
    shutil.copytree(tiny["llama"], base)
    for name in ("tokenizer.model", "tokenizer.json"):
        (base / name).unlink()
    code, err = run(["merge", "--base", str(base), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "tokenizer.model" in err and str(base) in err
    assert leftovers(out_dir) == []


def test_unknown_quant_type_lists_valid_ones(tiny, out_dir, capsys) -> None:
    code, err = run(["merge", "--base", str(tiny["llama"]), "-q", "q3_xs",
                     "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "q3_xs" in err
    for valid in ("q4_k_m", "q8_0", "f16", "q4 (= q4_k_m)"):
        assert valid in err
    assert leftovers(out_dir) == []


def test_v1_adapter_without_base(tiny, out_dir, capsys) -> None:
    code, err = run(["merge", "--lora", str(tiny["lora_v1"]), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 2 and "--base is required" in err


def test_offline_hub_id_with_empty_cache(out_dir, capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    code, err = run(["merge", "--base", "huggyllama/llama-7b", "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 1 and "huggyllama/llama-7b" in err and "HF_HUB_OFFLINE" in err


def test_corrupt_gguf_for_inspect_and_verify(tiny_gguf, tmp_path, capsys) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    code, err = run(["inspect", str(broken)], capsys)
    assert code == 2 and "truncated" in err and "broken.gguf" in err
    (tmp_path / "notgguf.gguf").write_text("hello")
    code, err = run(["inspect", str(tmp_path / "notgguf.gguf")], capsys)
    assert code == 2 and "not a GGUF file" in err


def test_interrupt_mid_write_leaves_nothing(tiny, out_dir, monkeypatch, capsys) -> None:
    import baize_convert.gguf_export as ge

    calls = {"n": 0}
    real = ge.encode_tensor

    def interrupting(w, qtype):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(w, qtype)

    monkeypatch.setattr(ge, "encode_tensor", interrupting)
    code, err = run(["merge", "--base", str(tiny["llama"]), "--lora", str(tiny["lora_v1"]),
                     "-o", str(out_dir / "m.gguf"), "--hf-out", str(out_dir / "hf")], capsys)
    assert code == 130 and "no output was written" in err
    assert leftovers(out_dir) == [] and not (out_dir / "hf").exists()
    assert list(out_dir.iterdir()) == []


def test_not_enough_disk_space(tiny, out_dir, monkeypatch, capsys) -> None:
    import shutil as shutil_mod

    import baize_convert.pipeline as pipeline

    usage = shutil_mod.disk_usage(out_dir)
    monkeypatch.setattr(pipeline.shutil, "disk_usage",
                        lambda path: usage._replace(free=1024))
    code, err = run(["merge", "--base", str(tiny["llama"]), "-o", str(out_dir / "m.gguf")], capsys)
    assert code == 1 and "not enough disk space" in err and "needs about" in err
    assert leftovers(out_dir) == []
