"""Benchmark: baize-convert merge vs the usual transformers+peft route, peak RSS and wall time.

Builds a synthetic fp16 LLaMA of about 1.5 GB (hidden 2048, 12 layers, vocab 32000) with a
rank-8 Baize-v1-style adapter, then runs, each in its own process:

  (a) baize-convert merge --base B --lora L --quantize q8_0
  (b) transformers from_pretrained + peft merge_and_unload + save_pretrained, then the GGUF
      conversion of the merged directory (baize-convert without an adapter, q8_0)

and prints wall time, peak RSS and the ratios (targets: RSS (a) <= 0.25 x (b), time (a) <= (b)).

    python bench/convert_bench.py [--workdir DIR] [--layers N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

BASELINE = r'''
import sys, torch
from transformers import LlamaForCausalLM
from peft import PeftModel
base, lora, out = sys.argv[1:4]
model = LlamaForCausalLM.from_pretrained(base, dtype=torch.float16)
model = PeftModel.from_pretrained(model, lora).merge_and_unload()
model.save_pretrained(out)
import shutil, pathlib
for f in pathlib.Path(base).glob("tokenizer*"):  # the usual route copies the tokenizer by hand
    shutil.copy2(f, out)
'''


def run_measured(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one child process."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return time.monotonic() - start, usage.ru_maxrss * 1024


def build_model(root: Path, layers: int) -> tuple[Path, Path]:
    import tinymodels
    import torch
    from safetensors.torch import save_file

    hidden, inter, vocab, heads = 2048, 5632, 32000, 16
    base, lora = root / "base", root / "lora"
    if (base / "config.json").exists() and (lora / "adapter_config.json").exists():
        return base, lora
    tok = tinymodels.build_tokenizer(root / "tokenizer")
    base.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def rnd(*shape):
        return (torch.randn(*shape) * 0.02).half()

    shard: dict[str, torch.Tensor] = {}
    weight_map: dict[str, str] = {}
    files: list[dict[str, torch.Tensor]] = []

    def add(name, tensor):
        shard[name] = tensor
        if sum(t.numel() for t in shard.values()) * 2 > 400_000_000:
            files.append(dict(shard))
            shard.clear()

    add("model.embed_tokens.weight", rnd(vocab, hidden))
    for i in range(layers):
        p = f"model.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            add(p + f"self_attn.{m}.weight", rnd(hidden, hidden))
        add(p + "mlp.gate_proj.weight", rnd(inter, hidden))
        add(p + "mlp.up_proj.weight", rnd(inter, hidden))
        add(p + "mlp.down_proj.weight", rnd(hidden, inter))
        add(p + "input_layernorm.weight", torch.ones(hidden).half())
        add(p + "post_attention_layernorm.weight", torch.ones(hidden).half())
    add("model.norm.weight", torch.ones(hidden).half())
    add("lm_head.weight", rnd(vocab, hidden))
    files.append(dict(shard))
    n = len(files)
    total = 0
    for i, chunk in enumerate(files):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(chunk, base / fname, metadata={"format": "pt"})
        for k, t in chunk.items():
            weight_map[k] = fname
            total += t.numel() * 2
    (base / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden,
              "intermediate_size": inter, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": vocab,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "float16", "tie_word_embeddings": False}
    (base / "config.json").write_text(json.dumps(config, indent=2))
    tinymodels.copy_tokenizer(tok, base)
    # A rank-8 adapter on the six Baize v1 modules.
    lora.mkdir(exist_ok=True)
    state = {}
    for i in range(layers):
        for m, (out_dim, in_dim) in {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden),
                                     "v_proj": (hidden, hidden), "gate_proj": (inter, hidden),
                                     "up_proj": (inter, hidden), "down_proj": (hidden, inter)}.items():
            kind = "self_attn" if m.endswith(("q_proj", "k_proj", "v_proj")) else "mlp"
            key = f"base_model.model.model.layers.{i}.{kind}.{m}"
            state[f"{key}.lora_A.weight"] = torch.randn(8, in_dim) * 0.01
            state[f"{key}.lora_B.weight"] = torch.randn(out_dim, 8) * 0.01
    torch.save(state, lora / "adapter_model.bin")
    (lora / "adapter_config.json").write_text(json.dumps(tinymodels.BAIZE_V1_ADAPTER_CONFIG))
    return base, lora


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "baize-convert-bench")
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    base, lora = build_model(args.workdir, args.layers)
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    print(f"synthetic LLaMA: {size / 1e9:.2f} GB fp16, {args.layers} layers; rank-8 adapter")
    bindir = Path(sys.executable).parent
    out_a = args.workdir / "ours-Q8_0.gguf"
    out_b = args.workdir / "usual-Q8_0.gguf"
    merged = args.workdir / "merged-hf"
    for p in (out_a, out_b):
        p.unlink(missing_ok=True)

    t_a, rss_a = run_measured([str(bindir / "baize-convert"), "merge", "--base", str(base),
                               "--lora", str(lora), "--quantize", "q8_0", "-o", str(out_a)])
    t_b1, rss_b1 = run_measured([sys.executable, "-c", BASELINE, str(base), str(lora), str(merged)])
    t_b2, rss_b2 = run_measured([str(bindir / "baize-convert"), "merge", "--base", str(merged),
                                 "--quantize", "q8_0", "-o", str(out_b)])
    t_b, rss_b = t_b1 + t_b2, max(rss_b1, rss_b2)
    print(f"{'route':<44} {'wall s':>8} {'peak RSS GB':>12}")
    print(f"{'(a) baize-convert merge --quantize q8_0':<44} {t_a:8.1f} {rss_a / 1e9:12.2f}")
    print(f"{'(b) transformers+peft merge + save':<44} {t_b1:8.1f} {rss_b1 / 1e9:12.2f}")
    print(f"{'    then GGUF conversion (q8_0)':<44} {t_b2:8.1f} {rss_b2 / 1e9:12.2f}")
    print(f"{'(b) total':<44} {t_b:8.1f} {rss_b / 1e9:12.2f}")
    print(f"ratio RSS (a)/(b) = {rss_a / rss_b:.3f}  (target <= 0.25)")
    print(f"ratio time (a)/(b) = {t_a / t_b:.3f}  (target <= 1.0)")


if __name__ == "__main__":
    main()
