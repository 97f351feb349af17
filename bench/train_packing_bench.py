"""Benchmark: useful tokens/s of LoRA training steps with padding-free packing vs padding.

Synthesises Baize-shaped dialogues (the turn count and reply length of Baize's released Quora
data: 3.9 turns a dialogue, AI replies of about 36 tokens), renders and masks them with the
trainer's own code (release format, cutoff 512, loss on all text as in Baize v1), then times the
same training steps (forward, backward, AdamW on the LoRA weights) of the same tiny LLaMA with:

  pad-513   Baize's finetune.py recipe: every sample padded to 513 positions (the anchor)
  dynamic   padded to the longest sample of each micro-batch (the trainer without options)
  grouped   dynamic padding after transformers' length grouping (--group-by-length)
  packing   one padding-free row per micro-batch, per-sample attention (--packing)

Every mode sees the same micro-batches of the same samples (grouped: the same samples in
length-grouped order). Modes are interleaved over several rounds and the median per mode is
kept, so the ratios survive a loaded machine better than the absolute figures.
"Useful" tokens are real tokens (they carry loss or context); "raw" counts every position
computed, padding included.

    python bench/train_packing_bench.py [--rounds 3] [--steps 4] [--micro 8] [--hidden 256]

On a GPU, the same table for a real checkpoint (bf16; packing uses FlashAttention varlen when
flash-attn is installed, per-sample SDPA otherwise), with peak memory per mode:

    python bench/train_packing_bench.py --base path/to/llama-1b --device cuda --threads 8
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent))

# Quora (Baize paper, table 1): 3.9 turns per dialogue, replies of 35.9 tokens on average.
TURN_WEIGHTS = {1: 0.10, 2: 0.15, 3: 0.20, 4: 0.20, 5: 0.15, 6: 0.10, 7: 0.06, 8: 0.04}
AI_TOKENS_MEAN = 36.0
HUMAN_TOKENS_MEAN = 18.0
MODES = ("pad-513", "dynamic", "grouped", "packing")


def synth_dialogues(tokenizer: Any, n: int, seed: int) -> list[Any]:
    """``n`` dialogues whose turn counts and turn lengths (in tokens) follow the Quora data."""
    import tinymodels

    from baize_tui.train.data import Dialogue

    rng = random.Random(seed)
    words = [w for line in tinymodels.corpus_lines() for w in line.split()
             if w.isalpha() and len(w) < 12]
    sample = " ".join(rng.choice(words) for _ in range(500))
    tokens_per_word = len(tokenizer(sample, add_special_tokens=False)["input_ids"]) / 500

    def text(mean_tokens: float) -> str:
        # Lognormal lengths (sigma 0.5) with the given mean, in words of the tiny vocabulary.
        target = rng.lognormvariate(0, 0.5) * mean_tokens / 1.133
        count = max(1, round(target / tokens_per_word))
        return " ".join(rng.choice(words) for _ in range(count)).capitalize() + "."

    turns = list(TURN_WEIGHTS)
    weights = list(TURN_WEIGHTS.values())
    out = []
    for _ in range(n):
        k = rng.choices(turns, weights)[0]
        out.append(Dialogue([(text(HUMAN_TOKENS_MEAN), text(AI_TOKENS_MEAN)) for _ in range(k)]))
    return out


def build(workdir: Path, args: argparse.Namespace) -> tuple[Any, Any]:
    """The tokenizer and a LoRA-wrapped LLaMA (Baize's six target modules, r 8): a tiny random
    one, or ``--base``."""
    import tinymodels
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if args.base:
        tokenizer = AutoTokenizer.from_pretrained(args.base)
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        model = AutoModelForCausalLM.from_pretrained(args.base, dtype=dtype)
    else:
        tokenizer = AutoTokenizer.from_pretrained(
            tinymodels.build_tokenizer(workdir / "tokenizer"))
        spec = tinymodels.TinySpec(hidden=args.hidden, layers=args.layers,
                                   heads=max(4, args.hidden // 64),
                                   intermediate=int(args.hidden * 2.6875), max_positions=1024,
                                   seed=1)
        model = tinymodels.make_model(spec).to(torch.float32)
    model = model.to(args.device)
    model.config.use_cache = False
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05,
                      target_modules=tinymodels.BAIZE_V1_TARGETS, task_type="CAUSAL_LM")
    return tokenizer, get_peft_model(model, lora)


def batches_for(mode: str, examples: list[dict], micro: int, steps: int, seed: int) -> list[list]:
    """The micro-batches a mode trains on: the same samples for every mode."""
    from transformers.trainer_pt_utils import get_length_grouped_indices

    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    order = order[:micro * steps]
    if mode == "grouped":
        import torch

        lengths = [len(examples[i]["input_ids"]) for i in order]
        grouped = get_length_grouped_indices(lengths, micro, mega_batch_mult=50,
                                             generator=torch.Generator().manual_seed(seed))
        order = [order[i] for i in grouped]
    return [[examples[i] for i in order[s * micro:(s + 1) * micro]] for s in range(steps)]


def run_mode(model: Any, mode: str, batches: list[list], pad_id: int) -> dict[str, float]:
    """Train the batches once; wall time, token counts and (CUDA) peak memory."""
    import torch

    from baize_tui.train.data import Collator
    from baize_tui.train.packing import PackingCollator, batch_token_counts, choose_attention

    device = next(model.parameters()).device
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if mode == "packing":
        collate: Any = PackingCollator()
        precision = "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "fp32"
        attention = choose_attention(packing=True, precision=precision)
        model.get_base_model().set_attn_implementation(attention)
    else:
        collate = Collator(pad_id, 513 if mode == "pad-513" else None)
        model.get_base_model().set_attn_implementation("sdpa")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    useful = raw = 0
    elapsed = cpu = 0.0
    for features in batches:
        inputs = collate(features)
        inputs.pop("sample_ids", None)
        real, positions = batch_token_counts(inputs)
        inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in inputs.items()}
        start, start_cpu = time.perf_counter(), time.process_time()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        elapsed += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        useful += real
        raw += positions
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    # On a GPU the wall clock is the measure; on a shared CPU, the process's CPU time (the
    # wall clock also counts the time other programs held the cores).
    return {"seconds": elapsed, "cpu_seconds": elapsed if cuda else cpu, "useful": useful,
            "raw": raw, "peak_gib": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dialogues", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per mode and round")
    parser.add_argument("--micro", type=int, default=8, help="samples per micro-batch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base", help="a real checkpoint directory instead of the tiny model")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()

    import torch

    from baize_tui.train.data import encode_all
    from baize_tui.train.packing import register_packed_attention

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    register_packed_attention()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, model = build(Path(tmp), args)
    dialogues = synth_dialogues(tokenizer, args.dialogues, args.seed)
    examples, stats = encode_all(tokenizer, dialogues, template="release", cutoff_len=512,
                                 loss="all")
    lengths = [len(e["input_ids"]) for e in examples]
    turns = statistics.mean(len(d.turns) for d in dialogues)
    print(f"data: {len(examples)} dialogues, {turns:.2f} turns, {statistics.mean(lengths):.0f} "
          f"tokens mean (median {statistics.median(lengths):.0f}, max {max(lengths)}), "
          f"{stats.truncated} cut at 512")
    shape = args.base or f"tiny LLaMA, hidden {args.hidden}, {args.layers} layers"
    print(f"model: {shape} on {args.device}, LoRA r 8 on 6 modules; "
          f"micro-batch {args.micro}, {args.steps} steps x {args.rounds} rounds, "
          f"{args.threads} thread(s)")

    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    run_mode(model, "packing", batches_for("packing", examples, args.micro, 1, 99), 0)  # warm-up
    for r in range(args.rounds):
        for mode in MODES if r % 2 == 0 else reversed(MODES):
            batches = batches_for(mode, examples, args.micro, args.steps, args.seed + r)
            results[mode].append(run_mode(model, mode, batches, tokenizer.unk_token_id or 0))

    report(results, args.rounds)
    ratio = statistics.median(round_ratios(results, "packing", "pad-513", args.rounds))
    return 0 if ratio >= 1.8 else 1


def round_ratios(results: dict[str, list[dict[str, float]]], mode: str, anchor: str,
                 rounds: int) -> list[float]:
    """Useful tokens per CPU second of ``mode`` over ``anchor``, round by round."""
    def rate(x: dict[str, float]) -> float:
        return x["useful"] / x["cpu_seconds"]

    return [rate(results[mode][r]) / rate(results[anchor][r]) for r in range(rounds)]


def report(results: dict[str, list[dict[str, float]]], rounds: int) -> None:
    """The markdown table: medians over rounds; ratios are medians of per-round ratios."""
    def median(mode: str, key: str, per: str) -> float:
        return statistics.median(x[key] / x[per] for x in results[mode])

    print("\n| batches | useful tokens/s (wall) | useful tokens/CPU-s | raw tokens/CPU-s | padding "
          "| vs pad-513 | vs dynamic | peak GiB |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        runs = results[mode]
        padding = 1 - sum(x["useful"] for x in runs) / sum(x["raw"] for x in runs)
        peak = max(x["peak_gib"] for x in runs)
        vs_pad = round_ratios(results, mode, "pad-513", rounds)
        vs_dyn = round_ratios(results, mode, "dynamic", rounds)
        print(f"| {mode} | {median(mode, 'useful', 'seconds'):,.0f} | "
              f"{median(mode, 'useful', 'cpu_seconds'):,.0f} | "
              f"{median(mode, 'raw', 'cpu_seconds'):,.0f} | {100 * padding:.0f}% | "
              f"{statistics.median(vs_pad):.2f}x ({min(vs_pad):.2f}-{max(vs_pad):.2f}) | "
              f"{statistics.median(vs_dyn):.2f}x ({min(vs_dyn):.2f}-{max(vs_dyn):.2f}) | "
              f"{f'{peak:.1f}' if peak else '-'} |")
    ratio = statistics.median(round_ratios(results, "packing", "pad-513", rounds))
    print(f"\npacking vs pad-513 (median of {rounds} rounds): {ratio:.2f}x (target >= 1.8x): "
          f"{'met' if ratio >= 1.8 else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
