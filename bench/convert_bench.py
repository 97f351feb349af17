"""Benchmark: baize-convert merge vs the usual transformers+peft route, peak RSS and wall time.

Builds a synthetic fp16 LLaMA of about 1.5 GB (hidden 2048, 12 layers, vocab 32000) with a
rank-8 Baize-v1-style adapter, then runs, each in its own process:

  (a) baize-convert merge --base B --lora L --quantize q8_0
  (b) transformers from_pretrained + peft merge_and_unload + save_pretrained, then the GGUF
      conversion of the merged directory (baize-convert without an adapter, q8_0)

and prints wall time, peak RSS and the ratios (targets: RSS (a) <= 0.25 x (b), time (a) <= (b)).

``--shape llama3`` builds a Llama 3.2-shaped model instead (about 1 GB fp16: hidden 2048,
4 layers, 32 heads / 8 KV heads, vocabulary 128,256 with a byte-level BPE tokenizer, llama3
rope scaling, tied embeddings) with a rank-8 adapter on all seven projections.

    python bench/convert_bench.py [--workdir DIR] [--layers N] [--shape llama1|llama3]
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


SHAPES = {
    # hidden, intermediate, vocab, heads, kv heads, tied, default layers
    "llama1": (2048, 5632, 32000, 16, 16, False, 12),
    "llama3": (2048, 8192, 128256, 32, 8, True, 4),
}
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def build_model(root: Path, layers: int, shape: str = "llama1") -> tuple[Path, Path]:
    import tinymodels
    import torch
    from safetensors.torch import save_file

    hidden, inter, vocab, heads, kv_heads, tied, _ = SHAPES[shape]
    head_dim = hidden // heads
    base, lora = root / "base", root / "lora"
    if (base / "config.json").exists() and (lora / "adapter_config.json").exists():
        return base, lora
    tok = _build_tokenizer(root, shape)
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
        for m, rows in (("q_proj", hidden), ("k_proj", kv_heads * head_dim),
                        ("v_proj", kv_heads * head_dim), ("o_proj", hidden)):
            add(p + f"self_attn.{m}.weight", rnd(rows, hidden))
        add(p + "mlp.gate_proj.weight", rnd(inter, hidden))
        add(p + "mlp.up_proj.weight", rnd(inter, hidden))
        add(p + "mlp.down_proj.weight", rnd(hidden, inter))
        add(p + "input_layernorm.weight", torch.ones(hidden).half())
        add(p + "post_attention_layernorm.weight", torch.ones(hidden).half())
    add("model.norm.weight", torch.ones(hidden).half())
    if not tied:
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
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
              "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "bos_token_id": 1,
              "eos_token_id": 2, "torch_dtype": "float16", "tie_word_embeddings": tied}
    if shape == "llama3":
        config.update(max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0,
                      rope_scaling=LLAMA3_ROPE, bos_token_id=128000, eos_token_id=128001)
        for f in tok.iterdir():
            (base / f.name).write_bytes(f.read_bytes())
    else:
        tinymodels.copy_tokenizer(tok, base)
    (base / "config.json").write_text(json.dumps(config, indent=2))
    _write_adapter(lora, shape, layers)
    return base, lora


def _build_tokenizer(root: Path, shape: str) -> Path:
    if shape == "llama3":
        import tinybpe

        return tinybpe.build_bpe_tokenizer(root / "tokenizer", "llama3")
    import tinymodels

    return tinymodels.build_tokenizer(root / "tokenizer")


def _write_adapter(lora: Path, shape: str, layers: int) -> None:
    """A rank-8 adapter: Baize v1's six modules on LLaMA-1, all seven on Llama 3."""
    import tinymodels
    import torch

    hidden, inter, _, heads, kv_heads, _, _ = SHAPES[shape]
    head_dim = hidden // heads
    lora.mkdir(exist_ok=True)
    kv = kv_heads * head_dim
    dims = {"q_proj": (hidden, hidden), "k_proj": (kv, hidden), "v_proj": (kv, hidden),
            "gate_proj": (inter, hidden), "up_proj": (inter, hidden), "down_proj": (hidden, inter)}
    if shape == "llama3":
        dims["o_proj"] = (hidden, hidden)
    state = {}
    for i in range(layers):
        for m, (out_dim, in_dim) in dims.items():
            kind = "self_attn" if m.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            key = f"base_model.model.model.layers.{i}.{kind}.{m}"
            state[f"{key}.lora_A.weight"] = torch.randn(8, in_dim) * 0.01
            state[f"{key}.lora_B.weight"] = torch.randn(out_dim, 8) * 0.01
    torch.save(state, lora / "adapter_model.bin")
    adapter_config = dict(tinymodels.BAIZE_V1_ADAPTER_CONFIG, target_modules=sorted(dims))
    (lora / "adapter_config.json").write_text(json.dumps(adapter_config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "baize-convert-bench")
    parser.add_argument("--layers", type=int, help="blocks (default 12 for llama1, 4 for llama3)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama1")
    parser.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    layers = args.layers or SHAPES[args.shape][-1]
    workdir = args.workdir / args.shape if args.shape != "llama1" else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    if args.build_only:
        build_model(workdir, layers, args.shape)
        return
    # Built in a child: a forked child's peak RSS starts from its parent's, so this process
    # must stay small for the measurements below to be the routes' own.
    subprocess.run([sys.executable, __file__, "--build-only", "--shape", args.shape,
                    "--layers", str(layers), "--workdir", str(args.workdir)], check=True)
    args.workdir = workdir
    base, lora = workdir / "base", workdir / "lora"
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    print(f"synthetic {args.shape}: {size / 1e9:.2f} GB fp16, {layers} layers; rank-8 adapter")
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
