"""Benchmark: chat speed of baize-tui's llama.cpp path, against its anchors, in one run.

Builds (once, cached in the temp dir) a synthetic LLaMA of about 90M parameters (hidden 768,
12 layers, 2048 positions, the tests' 1000-piece tokenizer), converts it to an F16 GGUF with
baize-convert, then measures on that one file:

  (a) decode tokens/s of a chat turn through ChatSession (exactly what `baize-tui ask` runs:
      fit, engine, stop filter) vs a raw ``llama_cpp.Llama.create_completion`` stream with the
      same prompt, sampling parameters, stop strings and seed, alternating, best of N each.
      Target: ours >= 0.97 x raw.
  (b) time to first token at turn 8 of a conversation with ~1,500 tokens of history vs at
      turn 1. Target <= 1.3 x. Also printed: the naive figure, turn 8's whole prompt
      evaluated from scratch (what the original demo paid every turn).

    python bench/chat_bench.py [--threads N] [--repeats N] [--tokens N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

CPU = [0.0]  # process CPU seconds of the last measured stream, first piece to end

SPEC = dict(hidden=768, layers=12, heads=12, intermediate=2048, max_positions=2048, seed=0,
            init_std=0.02)


def build_gguf(root: Path) -> Path:
    """The synthetic model as F16 GGUF (built on first use)."""
    out = root / "bench-chat-90m-F16.gguf"
    if out.exists():
        return out
    import tinymodels

    from baize_convert.pipeline import MergeRequest, run_merge

    root.mkdir(parents=True, exist_ok=True)
    tok = tinymodels.build_tokenizer(root / "tokenizer")
    spec = tinymodels.TinySpec(**SPEC)
    hf = tinymodels.save_safetensors_model(spec, root / "hf", tok)
    tmp = out.with_suffix(".partial.gguf")
    run_merge(MergeRequest(base=str(hf), loras=[], quant="f16", output=tmp, force=True),
              quiet=True)
    tmp.rename(out)
    return out


def raw_turn(llm, prompt: str, n: int, seed: int, stop: list[str]) -> tuple[str, float, float]:
    """(text, seconds to first chunk, seconds from first chunk to the end) of a raw stream.

    ``CPU[0]`` is set to the process CPU seconds from the first chunk to the end."""
    start = time.perf_counter()
    first = None
    cpu_first = 0.0
    text = ""
    for chunk in llm.create_completion(prompt, max_tokens=n, temperature=1.0, top_p=0.95,
                                       top_k=0, min_p=0.0, repeat_penalty=1.0, seed=seed,
                                       stop=stop, stream=True):
        piece = chunk["choices"][0]["text"]
        if piece and first is None:
            first = time.perf_counter()
            cpu_first = time.process_time()
        text += piece
    end = time.perf_counter()
    CPU[0] = time.process_time() - cpu_first if first is not None else 0.0
    return text, (first or end) - start, end - (first or end)


def ours_turn(session, message: str) -> tuple[object, float, float]:
    """(the ChatTurn, seconds to first piece, seconds from first piece to the end)."""
    start = time.perf_counter()
    first = None
    cpu_first = 0.0
    turn = session.send(message, threading.Event())
    for piece in turn:
        if piece and first is None:
            first = time.perf_counter()
            cpu_first = time.process_time()
    end = time.perf_counter()
    CPU[0] = time.process_time() - cpu_first if first is not None else 0.0
    return turn, (first or end) - start, end - (first or end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "baize-bench")
    parser.add_argument("--threads", type=int, help="llama.cpp threads (default: physical cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96, help="reply tokens in (a)")
    args = parser.parse_args()

    from baize_tui.chat import ChatSession
    from baize_tui.engines import SamplingParams
    from baize_tui.engines.llama import LlamaEngine
    from baize_tui.prompt import STOP_STRINGS, render

    t0 = time.perf_counter()
    path = build_gguf(args.workdir)
    print(f"model: {path} ({path.stat().st_size / 2**20:.0f} MiB), ready in "
          f"{time.perf_counter() - t0:.1f} s")
    engine = LlamaEngine(path, n_threads=args.threads)
    llm = engine.llama
    print(engine.describe())

    # (a) decode speed, same prompt / params / seed; no stop string so both run n tokens.
    message = "Explain how a hash map works, with an example in Python."
    prompt = render(None, [], message)
    params = SamplingParams(max_new_tokens=args.tokens, seed=42)
    raw_rates, our_rates, raw_cpu, our_cpu, texts = [], [], [], [], set()
    for _ in range(args.repeats):
        llm.reset()
        text, _, span = raw_turn(llm, prompt, args.tokens, 42, list(STOP_STRINGS))
        cpu_raw = CPU[0]
        llm.reset()
        turn, _, our_span = ours_turn(ChatSession(engine, params=params), message)
        cpu_ours = CPU[0]
        texts.add((text.strip(), turn.text))
        # Same seed, same tokens: the rate is tokens after the first over the time they took.
        n = turn.stats.completion_tokens
        raw_rates.append((n - 1) / span if span > 0 else float("nan"))
        our_rates.append((n - 1) / our_span if our_span > 0 else float("nan"))
        raw_cpu.append((n - 1) / cpu_raw if cpu_raw > 0 else float("nan"))
        our_cpu.append((n - 1) / cpu_ours if cpu_ours > 0 else float("nan"))
    raw_best, our_best = max(raw_rates), max(our_rates)
    raw_med, our_med = statistics.median(raw_rates), statistics.median(our_rates)
    print(f"(a) decode tokens/s over {args.repeats} alternating runs ({args.tokens}-token budget):"
          f" raw create_completion best {raw_best:.1f} median {raw_med:.1f}; baize-tui "
          f"(ChatSession, as in ask) best {our_best:.1f} median {our_med:.1f} -> ratio "
          f"{our_best / raw_best:.3f} (best) {our_med / raw_med:.3f} (median), target >= 0.97;"
          f" same text: {all(a == b for a, b in texts)}")
    print(f"    per CPU-second (robust on a busy machine; exact with --threads 1): raw "
          f"{statistics.median(raw_cpu):.1f}, baize-tui {statistics.median(our_cpu):.1f} -> "
          f"ratio {statistics.median(our_cpu) / statistics.median(raw_cpu):.3f}")

    # (b) time to first token over an 8-turn conversation.
    llm.reset()
    session = ChatSession(engine, params=SamplingParams(max_new_tokens=64, seed=7))
    filler = ("Please keep in mind the details I gave you about the project, the deadlines, the "
              "people involved and the budget, because I will ask about them again later on. ")
    ttfts, turns = [], []
    for i in range(8):
        turn, ttft, _ = ours_turn(session, f"Question {i + 1}: {filler}What do you think?")
        ttfts.append(ttft)
        turns.append(turn)
    last = turns[-1].prepared
    history_tokens = last.prompt_tokens - engine.count_tokens(
        render(None, [], f"Question 8: {filler}What do you think?"))
    assert last.dropped_turns == 0, "the conversation no longer fits: shorten the filler"
    # Naive: the same turn-8 prompt with nothing cached (re-encode everything).
    llm.reset()
    _, naive_ttft, _ = raw_turn(llm, last.prompt, 1, 7, list(STOP_STRINGS))
    last_prompt_tokens = last.prompt_tokens
    print(f"(b) time to first token: turn 1 {ttfts[0]:.3f} s, turn 8 {ttfts[7]:.3f} s with "
          f"{history_tokens} tokens of history (prompt {last_prompt_tokens} tokens) -> ratio "
          f"{ttfts[7] / ttfts[0]:.2f} (target <= 1.3); naive re-encode of turn 8 "
          f"{naive_ttft:.3f} s -> {naive_ttft / ttfts[0]:.2f} x turn 1")
    print("    per turn: " + ", ".join(f"{t:.3f}" for t in ttfts))
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
