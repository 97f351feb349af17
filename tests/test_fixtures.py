"""The tiny fixtures are what they claim to be (the other suites rely on it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tinymodels


def test_tokenizer_is_llama_like(tiny: dict[str, Path]) -> None:
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    tok = tiny["tokenizer"]
    sp = spm.SentencePieceProcessor(model_file=str(tok / "tokenizer.model"))
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id(), sp.pad_id()) == (0, 1, 2, -1)
    assert sp.vocab_size() == tinymodels.VOCAB_SIZE
    proto = pb.ModelProto()
    proto.ParseFromString((tok / "tokenizer.model").read_bytes())
    assert proto.trainer_spec.byte_fallback and proto.trainer_spec.split_digits
    assert proto.trainer_spec.model_type == pb.TrainerSpec.BPE
    assert sum(sp.IsByte(i) for i in range(sp.vocab_size())) == 256
    # byte fallback: text never seen in training still round-trips
    assert sp.decode(sp.encode("ж😀")) == "ж😀"
    assert {"tokenizer.json", "tokenizer_config.json"} <= {p.name for p in tok.iterdir()}


def test_models_load_in_transformers(tiny: dict[str, Path]) -> None:
    from transformers import LlamaForCausalLM

    gqa = LlamaForCausalLM.from_pretrained(tiny["llama_gqa"])
    assert gqa.config.num_key_value_heads < gqa.config.num_attention_heads
    index = json.loads((tiny["llama_gqa"] / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert (tiny["llama_bin"] / "pytorch_model.bin.index.json").exists()
    assert list(tiny["llama_bin"].glob("pytorch_model-*.bin"))
    binm = LlamaForCausalLM.from_pretrained(tiny["llama_bin"])
    assert binm.config.hidden_size == 64
    assert LlamaForCausalLM.from_pretrained(tiny["llama_wide"]).config.hidden_size % 256 == 0


def test_decapoda_copy_carries_the_hazards(tiny: dict[str, Path]) -> None:
    import torch

    d = tiny["llama_decapoda"]
    config = json.loads((d / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (0, 1, -1)
    keys = set()
    for shard in d.glob("pytorch_model-*.bin"):
        keys |= set(torch.load(shard, weights_only=True, mmap=True))
    assert any(k.endswith("rotary_emb.inv_freq") for k in keys)


def test_legacy_adapter_is_baize_v1_form_and_changes_weights(tiny: dict[str, Path]) -> None:
    import torch
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    lora = tiny["lora_v1"]
    assert json.loads((lora / "adapter_config.json").read_text()) == tinymodels.BAIZE_V1_ADAPTER_CONFIG
    state = torch.load(lora / "adapter_model.bin", weights_only=True)
    assert not any("o_proj" in k for k in state)
    assert len(state) == 2 * 6 * 2  # layers x modules x (A, B)
    assert all(v.abs().sum() > 0 for k, v in state.items() if "lora_B" in k)
    base = LlamaForCausalLM.from_pretrained(tiny["llama"])
    before = base.model.layers[0].self_attn.q_proj.weight.detach().clone()
    merged = PeftModel.from_pretrained(base, lora).merge_and_unload()
    assert not torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, before)


def test_safetensors_adapter_targets_all_projections(tiny: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(tiny["lora_st"] / "adapter_model.safetensors", "np") as fh:
        keys = list(fh.keys())
    for module in tinymodels.ALL_PROJECTIONS:
        assert any(f".{module}.lora_A" in k for k in keys), module


@pytest.mark.parametrize("name", ["lora_gqa", "lora_bin_base", "lora_wide"])
def test_other_adapters_exist(tiny: dict[str, Path], name: str) -> None:
    assert (tiny[name] / "adapter_model.bin").stat().st_size > 1000
