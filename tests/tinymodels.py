"""Build tiny LLaMA checkpoints, a tokenizer and LoRA adapters offline, for tests and benches.

Everything here is made from local text and random weights in a few seconds: no hub, no
network. The layouts copy what Hugging Face LLaMA checkpoints and Baize's adapters look like
on disk (HF LLaMA layouts, Baize's legacy v1 adapters: pickled ``adapter_model.bin`` with a
null base and six target modules), hazards included.
"""

from __future__ import annotations

import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VOCAB_SIZE = 1000
BAIZE_V1_TARGETS = ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj", "up_proj"]
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# The exact v1 adapter config Baize shipped (BAIZE.md §2): null base, legacy keys, no o_proj.
BAIZE_V1_ADAPTER_CONFIG: dict[str, Any] = {
    "base_model_name_or_path": None,
    "bias": "none",
    "enable_lora": None,
    "fan_in_fan_out": False,
    "inference_mode": False,
    "lora_alpha": 16,
    "lora_dropout": 0.05,
    "merge_weights": False,
    "modules_to_save": None,
    "peft_type": "LORA",
    "r": 8,
    "target_modules": BAIZE_V1_TARGETS,
    "task_type": "CAUSAL_LM",
}

_EXTRA_LINES = [
    "[|Human|]Hello!\n[|AI|]Hi!",
    "The following is a conversation between a human and an AI assistant named Baize.",
    "def add(a, b):\n    return a + b  # 12345 67890",
    "for i in range(10):\n\tprint(i ** 2)",
    "你好，世界。今天天气很好，我们去公园散步吧。",
    "Markdown: **bold**, `code`, [link](http://example.com) and lists:\n- one\n- two",
]


def corpus_lines() -> list[str]:
    """Local training text: stdlib docstrings plus chat, code, digits and CJK lines."""
    import argparse
    import collections
    import email
    import json as json_mod
    import logging
    import os
    import pathlib
    import subprocess
    import textwrap
    import unittest

    lines: list[str] = []
    modules = [json_mod, os, email, argparse, collections, pathlib, subprocess, textwrap, unittest]
    for module in modules + [logging]:
        for _name, obj in inspect.getmembers(module):
            doc = inspect.getdoc(obj)
            if doc:
                lines.extend(doc.splitlines())
    return lines + _EXTRA_LINES * 20


def build_tokenizer(out: Path) -> Path:
    """Train a LLaMA-style sentencepiece BPE model and write it the way HF LLaMA ships it.

    ``tokenizer.model`` (byte fallback, split digits, unk=0 bos=1 eos=2, no pad, 1000 pieces),
    ``tokenizer_config.json`` and a ``tokenizer.json`` with LLaMA's legacy normalizer
    (prepend ``▁``, spaces to ``▁``, no pre-tokenizer), which tokenizes like sentencepiece.
    """
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_lines()),
        model_prefix=str(out / "tokenizer"),
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        byte_fallback=True,
        split_digits=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        character_coverage=0.9995,
        num_threads=2,
        minloglevel=2,
    )
    (out / "tokenizer.vocab").unlink()
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "model_max_length": 2048,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, indent=2)
    )
    _write_tokenizer_json(out)
    return out


def _write_tokenizer_json(out: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)  # converts tokenizer.model
    tmp = out / ".hf"
    tok.save_pretrained(tmp)
    data = json.loads((tmp / "tokenizer.json").read_text(encoding="utf-8"))
    shutil.rmtree(tmp)
    data["normalizer"] = {
        "type": "Sequence",
        "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        ],
    }
    data["pre_tokenizer"] = None
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")


def copy_tokenizer(tokenizer_dir: Path, out: Path) -> None:
    """Put the tokenizer files next to a checkpoint."""
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        shutil.copy2(tokenizer_dir / name, out / name)


@dataclass(frozen=True)
class TinySpec:
    """Shape of a tiny LLaMA."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int | None = None
    intermediate: int = 176
    vocab: int = VOCAB_SIZE
    max_positions: int = 512
    seed: int = 0
    init_std: float = 0.1
    arch: str = "llama"  # or "mistral" (MistralForCausalLM)
    tied: bool = False  # tie_word_embeddings (SmolLM, Llama 3.2 1B/3B): no lm_head.weight
    rope_theta: float = 10000.0
    llama3_rope: bool = False  # rope_scaling rope_type=llama3 (Llama 3.1/3.2)
    bos_id: int = 1
    eos_id: int = 2


# Llama 3.1's rope_scaling, with the original context shrunk so that the rescaled
# frequencies change logits within a few dozen positions.
LLAMA3_ROPE_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 64}


def make_model(spec: TinySpec):
    """A random ``LlamaForCausalLM`` (or ``MistralForCausalLM``) of the given shape,
    deterministic from ``spec.seed``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    config_cls, model_cls = (MistralConfig, MistralForCausalLM) if spec.arch == "mistral" else \
        (LlamaConfig, LlamaForCausalLM)
    extra: dict[str, Any] = {"sliding_window": None} if spec.arch == "mistral" else {}
    rope = dict(LLAMA3_ROPE_SCALING) if spec.llama3_rope else {"rope_type": "default"}
    extra["rope_parameters"] = rope | {"rope_theta": spec.rope_theta}
    config = config_cls(
        vocab_size=spec.vocab,
        hidden_size=spec.hidden,
        intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads or spec.heads,
        max_position_embeddings=spec.max_positions,
        rms_norm_eps=1e-6,
        bos_token_id=spec.bos_id,
        eos_token_id=spec.eos_id,
        pad_token_id=None,
        tie_word_embeddings=spec.tied,
        initializer_range=spec.init_std,
        **extra,
    )
    torch.manual_seed(spec.seed)
    model = model_cls(config)
    with torch.no_grad():  # random norms so a wrong norm mapping shows up in the logits
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn_like(param))
    return model.eval()


def save_safetensors_model(spec: TinySpec, out: Path, tokenizer_dir: Path,
                           max_shard_size: str | None = None) -> Path:
    """Save as HF safetensors (sharded with ``model.safetensors.index.json`` if asked)."""
    model = make_model(spec)
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(out, **kwargs)
    copy_tokenizer(tokenizer_dir, out)
    return out


def _classic_rope_config(out: Path) -> None:
    """Rewrite transformers 5's ``rope_parameters`` as the hub's configs still spell it
    (top-level ``rope_theta``, ``rope_scaling`` only when scaled), as a download looks."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    params = config.pop("rope_parameters", None) or {}
    config["rope_theta"] = params.pop("rope_theta", 10000.0)
    config["rope_scaling"] = params if params.get("rope_type", "default") != "default" else None
    path.write_text(json.dumps(config, indent=2))


def save_family_model(spec: TinySpec, out: Path, tokenizer_dir: Path) -> Path:
    """A LLaMA-family checkpoint as the hub ships it: safetensors (no ``lm_head.weight``
    when tied), a classic config.json, and every tokenizer file of ``tokenizer_dir``."""
    model = make_model(spec)
    model.save_pretrained(out)
    _classic_rope_config(out)
    for path in tokenizer_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, out / path.name)
    return out


def _save_bin_shards(state: dict, out: Path, n_shards: int) -> None:
    import torch

    names = list(state)
    per = -(-len(names) // n_shards)
    weight_map: dict[str, str] = {}
    total = 0
    for i in range(n_shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        chunk = {k: state[k].contiguous().clone() for k in names[i * per:(i + 1) * per]}
        torch.save(chunk, out / fname)
        for key, tensor in chunk.items():
            weight_map[key] = fname
            total += tensor.numel() * tensor.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def save_bin_model(spec: TinySpec, out: Path, tokenizer_dir: Path, *, decapoda: bool = False,
                   dtype: str = "float32") -> Path:
    """Save as pickled ``pytorch_model-0000N-of-0000M.bin`` shards with an index.

    ``decapoda=True`` copies the 2023 hazards: ``config.json`` with bos 0 / eos 1 / pad -1 and
    the ``LLaMAForCausalLM`` spelling, and ``rotary_emb.inv_freq`` buffers in the state dict.
    """
    import torch

    model = make_model(spec)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    state = {k: v.to(getattr(torch, dtype)) for k, v in model.state_dict().items()}
    if decapoda:
        head_dim = spec.hidden // spec.heads
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        for layer in range(spec.layers):
            state[f"model.layers.{layer}.self_attn.rotary_emb.inv_freq"] = inv_freq.clone()
        config = json.loads((out / "config.json").read_text())
        config.update(bos_token_id=0, eos_token_id=1, pad_token_id=-1,
                      architectures=["LLaMAForCausalLM"])
        (out / "config.json").write_text(json.dumps(config, indent=2))
    _save_bin_shards(state, out, n_shards=2)
    copy_tokenizer(tokenizer_dir, out)
    return out


def make_adapter_state(spec: TinySpec, targets: list[str], r: int, alpha: int, seed: int,
                       use_rslora: bool = False) -> tuple[dict, Any]:
    """A peft LoRA on ``make_model(spec)`` with random non-zero B; returns (state dict, config)."""
    import torch
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.05, target_modules=targets,
                        bias="none", task_type="CAUSAL_LM", use_rslora=use_rslora)
    peft_model = get_peft_model(make_model(spec), config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or "lora_A" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * spec.init_std)
    return get_peft_model_state_dict(peft_model), config


def save_legacy_adapter(spec: TinySpec, out: Path, seed: int = 1) -> Path:
    """Baize v1's form: pickled ``adapter_model.bin`` and the exact v1 config (null base)."""
    import torch

    state, _ = make_adapter_state(spec, BAIZE_V1_TARGETS, r=8, alpha=16, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.contiguous() for k, v in state.items()}, out / "adapter_model.bin")
    (out / "adapter_config.json").write_text(json.dumps(BAIZE_V1_ADAPTER_CONFIG))
    return out


def save_safetensors_adapter(spec: TinySpec, out: Path, base: str, seed: int = 2, r: int = 16,
                             alpha: int = 32, use_rslora: bool = False) -> Path:
    """A current-PEFT adapter on all seven projections, as ``adapter_model.safetensors``."""
    from safetensors.torch import save_file

    state, config = make_adapter_state(spec, ALL_PROJECTIONS, r=r, alpha=alpha, seed=seed,
                                       use_rslora=use_rslora)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, out / "adapter_model.safetensors")
    config_dict = config.to_dict()
    config_dict["base_model_name_or_path"] = base
    config_dict["target_modules"] = sorted(config_dict["target_modules"])
    (out / "adapter_config.json").write_text(json.dumps(config_dict, indent=2, default=str))
    return out


# The fixture set: name -> (spec, how it is saved). Tests reach them through conftest.
TINY = TinySpec()
TINY_GQA = TinySpec(kv_heads=2, seed=3)
TINY_BIN = TinySpec(seed=4)
# K-quants work on 256-wide blocks: every row width here is a multiple of 256.
WIDE = TinySpec(hidden=256, intermediate=512, heads=4, layers=2, seed=5, init_std=0.05)


# Today's LLaMA family (issue 15), each with an all-projection adapter.
# Llama 3.1-shaped: byte-level BPE (llama-bpe), GQA, llama3 rope scaling, separate lm_head.
LLAMA3 = TinySpec(kv_heads=2, seed=11, rope_theta=500000.0, llama3_rope=True)
# SmolLM2-shaped: byte-level BPE (smollm), GQA, tied embeddings.
SMOLLM = TinySpec(kv_heads=2, seed=12, tied=True)
# Mistral 7B-shaped: MistralForCausalLM, sentencepiece, GQA (4 heads share 2 KV heads).
MISTRAL = TinySpec(kv_heads=2, seed=13, arch="mistral")
FAMILY_NAMES = ["bpe_llama3", "bpe_smollm", "llama3", "smollm", "mistral",
                "lora_llama3", "lora_smollm", "lora_mistral"]


def build_family(root: Path) -> dict[str, Path]:
    """Build the LLaMA-family fixtures under ``root``; returns name -> directory."""
    import dataclasses

    from tinybpe import bpe_size, build_bpe_tokenizer

    paths = {"bpe_llama3": build_bpe_tokenizer(root / "bpe-llama3", "llama3"),
             "bpe_smollm": build_bpe_tokenizer(root / "bpe-smollm", "smollm")}
    spm = build_tokenizer(root / "spm")
    llama3 = dataclasses.replace(LLAMA3, vocab=bpe_size(paths["bpe_llama3"]), bos_id=1000,
                                 eos_id=1001)
    smollm = dataclasses.replace(SMOLLM, vocab=bpe_size(paths["bpe_smollm"]), bos_id=1, eos_id=2)
    for name, spec, tok in (("llama3", llama3, paths["bpe_llama3"]),
                            ("smollm", smollm, paths["bpe_smollm"]), ("mistral", MISTRAL, spm)):
        paths[name] = save_family_model(spec, root / name, tok)
        paths[f"lora_{name}"] = save_safetensors_adapter(spec, root / f"lora-{name}",
                                                         base=str(paths[name]), seed=spec.seed + 100)
    return paths


def build_all(root: Path) -> dict[str, Path]:
    """Build every fixture under ``root``; returns name -> directory."""
    tok = build_tokenizer(root / "tokenizer")
    paths = {"tokenizer": tok}
    paths["llama"] = save_safetensors_model(TINY, root / "llama", tok)
    paths["llama_gqa"] = save_safetensors_model(TINY_GQA, root / "llama-gqa-sharded", tok,
                                                max_shard_size="100KB")
    paths["llama_bin"] = save_bin_model(TINY_BIN, root / "llama-bin", tok)
    paths["llama_decapoda"] = save_bin_model(TINY, root / "llama-decapoda", tok, decapoda=True,
                                             dtype="float16")
    paths["llama_wide"] = save_safetensors_model(WIDE, root / "llama-wide", tok)
    paths["lora_v1"] = save_legacy_adapter(TINY, root / "lora-baize-v1")
    paths["lora_st"] = save_safetensors_adapter(TINY, root / "lora-all-st", base=str(paths["llama"]))
    paths["lora_gqa"] = save_legacy_adapter(TINY_GQA, root / "lora-gqa-v1", seed=6)
    paths["lora_bin_base"] = save_legacy_adapter(TINY_BIN, root / "lora-bin-v1", seed=7)
    paths["lora_wide"] = save_legacy_adapter(WIDE, root / "lora-wide-v1", seed=8)
    return paths
