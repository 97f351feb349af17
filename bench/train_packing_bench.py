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


def build(workdir: Path, hidden: int, layers: int) -> tuple[Any, Any]:
    """The tokenizer and a LoRA-wrapped tiny LLaMA (Baize's six target modules, r 8)."""
    import tinymodels
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    tok_dir = tinymodels.build_tokenizer(workdir / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    spec = tinymodels.TinySpec(hidden=hidden, layers=layers, heads=max(4, hidden // 64),
                               intermediate=int(hidden * 2.6875), max_positions=1024, seed=1)
    model = tinymodels.make_model(spec).to(torch.float32)
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
    """Train the batches once; wall time and token counts."""
    import torch

    from baize_tui.train.data import Collator
    from baize_tui.train.packing import PACKED_ATTENTION, PackingCollator, batch_token_counts

    if mode == "packing":
        collate: Any = PackingCollator()
        model.get_base_model().set_attn_implementation(PACKED_ATTENTION)
    else:
        collate = Collator(pad_id, 513 if mode == "pad-513" else None)
        model.get_base_model().set_attn_implementation("sdpa")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()
    useful = raw = 0
    elapsed = 0.0
    for features in batches:
        inputs = collate(features)
        inputs.pop("sample_ids", None)
        real, positions = batch_token_counts(inputs)
        start = time.perf_counter()
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed += time.perf_counter() - start
        useful += real
        raw += positions
    return {"seconds": elapsed, "useful": useful, "raw": raw}


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
    args = parser.parse_args()

    import torch

    from baize_tui.train.data import encode_all
    from baize_tui.train.packing import register_packed_attention

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    register_packed_attention()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, model = build(Path(tmp), args.hidden, args.layers)
    dialogues = synth_dialogues(tokenizer, args.dialogues, args.seed)
    examples, stats = encode_all(tokenizer, dialogues, template="release", cutoff_len=512,
                                 loss="all")
    lengths = [len(e["input_ids"]) for e in examples]
    turns = statistics.mean(len(d.turns) for d in dialogues)
    print(f"data: {len(examples)} dialogues, {turns:.2f} turns, {statistics.mean(lengths):.0f} "
          f"tokens mean (median {statistics.median(lengths):.0f}, max {max(lengths)}), "
          f"{stats.truncated} cut at 512")
    print(f"model: hidden {args.hidden}, {args.layers} layers, LoRA r 8 on 6 modules; "
          f"micro-batch {args.micro}, {args.steps} steps x {args.rounds} rounds, "
          f"{args.threads} thread(s)")

    results: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    run_mode(model, "packing", batches_for("packing", examples, args.micro, 1, 99), 0)  # warm-up
    for r in range(args.rounds):
        for mode in MODES if r % 2 == 0 else reversed(MODES):
            batches = batches_for(mode, examples, args.micro, args.steps, args.seed + r)
            results[mode].append(run_mode(model, mode, batches, tokenizer.unk_token_id or 0))

    def rate(mode: str, key: str) -> float:
        return statistics.median(x[key] / x["seconds"] for x in results[mode])

    anchor, dynamic = rate("pad-513", "useful"), rate("dynamic", "useful")
    print("\n| batches | useful tokens/s | raw tokens/s | padding | vs pad-513 | vs dynamic |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode in MODES:
        padding = 1 - sum(x["useful"] for x in results[mode]) / sum(x["raw"] for x in results[mode])
        useful = rate(mode, "useful")
        print(f"| {mode} | {useful:,.0f} | {rate(mode, 'raw'):,.0f} | "
              f"{100 * padding:.0f}% | {useful / anchor:.2f}x | "
              f"{useful / dynamic:.2f}x |")
    ratio = rate("packing", "useful") / anchor
    print(f"\npacking vs pad-513: {ratio:.2f}x (target >= 1.8x): {'met' if ratio >= 1.8 else 'NOT met'}")
    return 0 if ratio >= 1.8 else 1


if __name__ == "__main__":
    sys.exit(main())
