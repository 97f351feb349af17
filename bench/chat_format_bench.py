"""Benchmark: chat formats and the token-by-token decode loop, each against its anchor.

Builds (once, cached in the temp dir) ChatML GGUFs with tests/tiny_chat_ggufs.py — real
llama-architecture models (GQA, RMS norm, rope) whose greedy reply is designed, so the reply's
shape is fixed and never ends on its own: plain text, byte tokens, or bytes that never form
valid UTF-8 — and measures:

  (a) time to first token at turn 8 of a ChatML conversation with ~1,500 tokens of history
      vs turn 1 (the KV cache must serve the history); 8 layers, hidden 512, F32 (~25M).
      Target <= 1.3 x.
  (b) decode tokens/s through the path `ask` takes (ChatController -> ChatSession ->
      LlamaEngine's token loop) vs a bare ``Llama.generate`` loop (decode + sample, no text
      handling) on the same loaded model, sampling, seed and threads, the same number of
      tokens, alternating rounds; wall and process-CPU rates, medians and per-round ratios;
      then `baize-tui ask --stats` itself (a subprocess) vs a bare loop on a fresh Llama.
      Model: 12 layers, FFN 2816, random F16 matrices (~61M). Target >= 0.95 x.
  (c) per-token cost of a 2,000-token reply made of byte tokens (valid "中", and bytes that
      are never valid) vs a plain-text reply of the same length, through the ChatController
      path (each reply checked to be exactly 2,000 tokens); process CPU (robust on a loaded
      machine) and wall; second half vs first half. Target <= 1.1 x. For reference,
      llama-cpp-python's ``create_completion(stream=True)`` on the byte-token reply.

    python bench/chat_format_bench.py [--threads N] [--repeats N] [--tokens N] [--parts acb]
                                      [--no-ask] [--no-library]

``--threads N`` below the physical cores pins this process (and the `ask` it starts) to N
CPUs, so both sides use N threads; on a shared, loaded machine 1 thread gives steadier ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

N_LAYER, N_FF = 8, 1408
#: the bench's models (the suffix changes whenever the fixture builder's weights change)
CACHE = Path(tempfile.gettempdir()) / "baize-tui-format-bench-v2"


def build(chain: str) -> Path:
    """The bench GGUF for one reply shape (built on first use)."""
    from tiny_chat_ggufs import build_chat_gguf

    out = CACHE / f"chatml-{chain}-L{N_LAYER}.gguf"
    if not out.exists():
        build_chat_gguf(out, "chatml", chain=chain, n_ctx=4096, n_layer=N_LAYER, n_ff=N_FF)
    return out


def bench_ttft(threads: int, repeats: int) -> dict[str, float]:
    """Medians over ``repeats`` chats of turn 1's and turn 8's time to first token, in wall
    seconds and in process CPU seconds (CPU time survives a loaded machine better), and turn
    8's prompt size."""
    import threading

    from baize_tui.chat_core import ChatController, ChatSettings
    from baize_tui.engines.base import SamplingParams
    from baize_tui.engines.llama import LlamaEngine

    engine = LlamaEngine(build("text"), n_threads=threads, max_ctx=4096)
    settings = ChatSettings(model="bench", params=SamplingParams(max_new_tokens=40, seed=1))
    user = " ".join(["Tell me about cats and the world"] * 20)  # ~150 tokens a message
    got: dict[str, list[float]] = {"wall1": [], "wall8": [], "cpu1": [], "cpu8": []}
    tokens = 0
    try:
        for r in range(repeats):
            session = ChatController(engine, None).session(settings)
            for turn_no in range(1, 9):
                wall, cpu = time.perf_counter(), time.process_time()
                turn = session.send(f"{r} {turn_no} {user}", threading.Event())
                next(turn)  # fitting, the prompt's evaluation, the first token
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                turn.run()
                if turn_no in (1, 8):
                    got[f"wall{turn_no}"].append(wall)
                    got[f"cpu{turn_no}"].append(cpu)
                    tokens = turn.stats.prompt_tokens
                    got.setdefault(f"new{turn_no}", []).append(
                        float(turn.stats.prompt_tokens - (turn.stats.reused_tokens or 0)))
    finally:
        engine.close()
    out = {k: statistics.median(v) for k, v in got.items()}
    out["tokens"] = tokens
    return out


PROMPT = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
#: (b)'s model: the "text" chain (never an end-of-turn, so every run has the asked length),
#: random F16 matrices, 12 layers, FFN 2816: about 61M parameters, a small hub model's shape
DECODE_LAYERS, DECODE_FF = 12, 2816


def build_decode_model() -> Path:
    """(b)'s F16 GGUF (built on first use)."""
    from tiny_chat_ggufs import build_chat_gguf

    out = CACHE / f"chatml-text-L{DECODE_LAYERS}-F{DECODE_FF}-f16.gguf"
    if not out.exists():
        build_chat_gguf(out, "chatml", chain="text", n_ctx=4096, n_layer=DECODE_LAYERS,
                        n_ff=DECODE_FF, f16=True)
    return out


def bare_loop(llm: object, n: int, seed: int = 1) -> tuple[float, float]:
    """(tokens per wall second, tokens per process-CPU second) of a bare ``Llama.generate``
    loop on ``llm`` (a ``llama_cpp.Llama``): decode + sample, no text handling; the first
    token (the prompt's evaluation) is not counted. An engine's per-instance token counter
    is taken off for the run, so the anchor is the library alone."""
    prompt = llm.tokenize(PROMPT.encode(), add_bos=True, special=True)  # type: ignore[attr-defined]
    llm.reset()  # type: ignore[attr-defined]  # no KV reuse on either side
    llm.set_seed(seed)  # type: ignore[attr-defined]
    counter = vars(llm).pop("eval", None)
    count, first, cpu = 0, 0.0, 0.0
    try:
        for _ in llm.generate(prompt, top_k=0, top_p=0.95,  # type: ignore[attr-defined]
                              min_p=0.0, temp=1.0, repeat_penalty=1.0):
            count += 1
            if count == 1:
                first, cpu = time.perf_counter(), time.process_time()
            if count >= n:
                break
        wall, cpu = time.perf_counter() - first, time.process_time() - cpu
    finally:
        if counter is not None:
            llm.eval = counter  # type: ignore[attr-defined]
    assert count == n, count
    return (count - 1) / wall, (count - 1) / cpu


def controller_loop(engine: object, n: int, seed: int = 1) -> tuple[float, float]:
    """As :func:`bare_loop`, through the path `ask` takes, in this process: ChatController ->
    ChatSession (format, stop filter) -> LlamaEngine's token loop, each piece written to a
    sink as `ask` writes it; measured from the first piece."""
    import io
    import threading

    from baize_tui.chat_core import ChatController, ChatSettings
    from baize_tui.engines.base import SamplingParams

    engine.llama.reset()  # type: ignore[attr-defined]  # no KV reuse on either side
    settings = ChatSettings(model="bench", params=SamplingParams(max_new_tokens=n, seed=seed))
    controller = ChatController(engine, None)  # type: ignore[arg-type]
    turn = controller.send(settings, "Hello", threading.Event())
    sink = io.StringIO()
    first = cpu = 0.0
    before = 0
    for piece in turn:
        if not first:
            first, cpu = time.perf_counter(), time.process_time()
            before = turn.stats.completion_tokens
        sink.write(piece)
        sink.flush()
    wall, cpu = time.perf_counter() - first, time.process_time() - cpu
    assert turn.stats.completion_tokens == n, turn.stats
    return (n - before) / wall, (n - before) / cpu


def ask_loop(path: Path, n: int, seed: int = 1) -> float:
    """Decode tokens/s through `baize-tui ask` (a subprocess; its own --stats figure)."""
    env = {**os.environ, "BAIZE_HOME": tempfile.mkdtemp(prefix="baize-bench-home-")}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "baize-tui"), "ask", "-m", str(path), "--no-history",
         "--stats", "-n", str(n), "--seed", str(seed), "--n-ctx", "4096", "Hello"],
        capture_output=True, text=True, env=env, check=True)
    found = re.search(r"([\d.]+) tokens/s", out.stderr)
    if not found or f"+ {n} reply tokens" not in out.stderr:
        raise SystemExit(f"no tokens/s for {n} tokens in ask's stats: {out.stderr}")
    return float(found.group(1))


def per_token_cost(chain: str, threads: int, n: int) -> dict[str, float]:
    """Seconds per token (wall and process CPU) of an n-token reply through the path `ask` and
    the chat screen take (ChatController -> ChatSession -> LlamaEngine), over the whole reply
    and over its first and second halves (by token count, not by pieces shown)."""
    import threading

    from baize_tui.chat_core import ChatController, ChatSettings
    from baize_tui.engines.base import SamplingParams
    from baize_tui.engines.llama import LlamaEngine

    engine = LlamaEngine(build(chain), n_threads=threads, max_ctx=4096)
    try:
        settings = ChatSettings(model="bench", params=SamplingParams(max_new_tokens=n, seed=1))
        turn = ChatController(engine, None).send(settings, "Hello", threading.Event())
        stamps: list[tuple[int, float, float]] = []  # (tokens so far, wall, cpu) per piece
        for _ in turn:
            stamps.append((turn.stats.completion_tokens, time.perf_counter(),
                           time.process_time()))
        assert turn.stats.completion_tokens == n, turn.stats  # the whole reply, every time
        mid = next(s for s in stamps if s[0] >= n // 2)
        first, last = stamps[0], stamps[-1]

        def per(a: tuple[int, float, float], b: tuple[int, float, float], i: int) -> float:
            return (b[i] - a[i]) / (b[0] - a[0])

        return {"wall": per(first, last, 1), "cpu": per(first, last, 2),
                "first": per(first, mid, 2), "second": per(mid, last, 2),
                "chars": float(len(turn.text))}
    finally:
        engine.close()


def library_stream_cost(threads: int, n: int) -> float:
    """Seconds per token of llama-cpp-python's create_completion(stream=True), byte tokens."""
    import llama_cpp

    llm = llama_cpp.Llama(str(build("bytes")), n_ctx=4096, n_threads=threads, verbose=False)
    try:
        prompt = llm.tokenize(b"<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
                              add_bos=True, special=True)
        start = time.perf_counter()
        for _ in llm.create_completion(prompt, max_tokens=n, stream=True, seed=1, top_k=0,
                                       min_p=0.0, temperature=1.0, stop=["[|Human|]"]):
            pass
        return (time.perf_counter() - start) / n
    finally:
        llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads (default: what `ask` uses, the physical cores); fewer "
                             "pins this process (and `ask`) to that many CPUs")
    parser.add_argument("--no-library", action="store_true",
                        help="(c) without llama-cpp-python's own stream (slow) for reference")
    parser.add_argument("--no-ask", action="store_true",
                        help="(b) without the `baize-tui ask` subprocess rows")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=512, help="decode length for (b)")
    parser.add_argument("--parts", default="acb", help="which measures, in order (a, b, c)")
    args = parser.parse_args()
    from baize_tui.engines.llama import physical_cores

    if args.threads is not None and args.threads < physical_cores():
        # `ask` uses as many threads as CPUs it may run on: pin, so it and the anchor agree
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    args.threads = physical_cores()  # `ask` runs with this many; the anchor must too
    rows: list[tuple[str, str, str, str]] = []
    width = 62
    print(f"{'measure'.ljust(width)}  {'figures':36}  {'ratio':12}  target", flush=True)

    def row(name: str, figures: str, ratio: str, target: str) -> None:
        rows.append((name, figures, ratio, target))
        print(f"{name.ljust(width)}  {figures:36}  {ratio:12}  {target}", flush=True)

    if "a" in args.parts:
        t = bench_ttft(args.threads, args.repeats)
        row("(a) TTFT turn 8 / turn 1, ChatML, wall",
            f"{t['wall8'] * 1000:.0f} / {t['wall1'] * 1000:.0f} ms ({t['tokens']:.0f} tok)",
            f"{t['wall8'] / t['wall1']:.2f} x", "<= 1.3 x")
        row("    prompt tokens evaluated, turn 8 / turn 1",
            f"{t['new8']:.0f} / {t['new1']:.0f} (KV cache served the rest)",
            f"{t['new8'] / t['new1']:.2f} x", "")
        row("    same, process CPU time", f"{t['cpu8'] * 1000:.0f} / {t['cpu1'] * 1000:.0f} ms",
            f"{t['cpu8'] / t['cpu1']:.2f} x", "<= 1.3 x")
    if "c" in args.parts:
        per_token_rows(args, row)
    if "b" in args.parts:
        decode_rows(args, row)


def decode_rows(args: argparse.Namespace, row: Callable[[str, str, str, str], None]) -> None:
    """(b): ours vs the bare loop on one loaded model, alternating; then `ask` itself."""
    from baize_tui.engines.llama import LlamaEngine

    path = build_decode_model()
    engine = LlamaEngine(path, n_threads=args.threads, max_ctx=4096)
    ours, bare = [], []
    try:
        bare_loop(engine.llama, 16)  # warm the weights' pages and the threads
        for r in range(args.repeats):
            bare.append(bare_loop(engine.llama, args.tokens, r + 1))
            ours.append(controller_loop(engine, args.tokens, r + 1))
    finally:
        engine.close()
    for i, what in ((0, "wall"), (1, "process CPU")):
        o, b = statistics.median(x[i] for x in ours), statistics.median(x[i] for x in bare)
        ratios = [x[i] / y[i] for x, y in zip(ours, bare, strict=True)]
        row(f"(b) decode tok/s ({what}), {args.tokens} tok: ChatController path vs bare "
            f"generate", f"{o:.1f} vs {b:.1f}", f"{o / b:.3f} x", ">= 0.95 x")
        row("    per-round ratios (ours / bare, same round), median",
            " ".join(f"{x:.2f}" for x in ratios), f"{statistics.median(ratios):.3f} x", "")
    if args.no_ask:
        return
    ask, anchor = [], []
    for r in range(args.repeats):
        ask.append(ask_loop(path, args.tokens, r + 1))
        llm = _bare_model(path, args.threads)
        try:
            anchor.append(bare_loop(llm, args.tokens, r + 1)[0])
        finally:
            llm.close()  # type: ignore[attr-defined]
    o, b = statistics.median(ask), statistics.median(anchor)
    row("    `baize-tui ask --stats` (subprocess) vs bare loop (fresh Llama), wall",
        f"{o:.1f} vs {b:.1f}", f"{o / b:.3f} x", ">= 0.95 x")


def _bare_model(path: Path, threads: int) -> object:
    import llama_cpp

    return llama_cpp.Llama(str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                           verbose=False)


def per_token_rows(args: argparse.Namespace, row: Callable[[str, str, str, str], None]) -> None:
    """(c): byte-token replies vs plain text (CPU time, which survives a loaded machine better
    than wall time; wall time alongside), and the library's stream for reference."""
    n = 2000
    plain = [per_token_cost("text", args.threads, n) for _ in range(args.repeats)]
    p_cpu = statistics.median(c["cpu"] for c in plain)
    p_wall = statistics.median(c["wall"] for c in plain)
    p_first = statistics.median(c["first"] for c in plain)
    p_second = statistics.median(c["second"] for c in plain)
    row("(c) second half / first half (CPU), plain text (attention grows with the context)",
        f"{p_second * 1e3:.2f} / {p_first * 1e3:.2f} ms", f"{p_second / p_first:.2f} x", "")
    for chain, label in (("bytes", "byte tokens (valid 中)"), ("invalid", "bytes never valid")):
        runs = [per_token_cost(chain, args.threads, n) for _ in range(args.repeats)]
        cpu = statistics.median(c["cpu"] for c in runs)
        wall = statistics.median(c["wall"] for c in runs)
        row(f"(c) per-token CPU, {label} vs plain text, {n} tokens",
            f"{cpu * 1e3:.2f} vs {p_cpu * 1e3:.2f} ms", f"{cpu / p_cpu:.2f} x", "<= 1.1 x")
        row("    same, wall", f"{wall * 1e3:.2f} vs {p_wall * 1e3:.2f} ms",
            f"{wall / p_wall:.2f} x", "<= 1.1 x")
        first = statistics.median(c["first"] for c in runs)
        second = statistics.median(c["second"] for c in runs)
        row(f"    second half / first half (CPU), {label}",
            f"{second * 1e3:.2f} / {first * 1e3:.2f} ms", f"{second / first:.2f} x",
            "~ plain's (flat)")
    if args.no_library:
        return
    lib = library_stream_cost(args.threads, n)
    row("    reference: create_completion(stream=True), byte tokens, wall",
        f"{lib * 1e3:.2f} ms/token", f"{lib / p_wall:.2f} x plain", "(not ours)")


if __name__ == "__main__":
    main()
