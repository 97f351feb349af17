"""Benchmark: self-chat throughput against a local OpenAI-compatible server (300 ms per call).

Runs, in one process against one server (a separate process, tests/openai_server.py):

  original   Baize's collector pattern: sequential sync calls with ``time.sleep(1)`` each
  bare-32    the anchor from the issue: a bare ``AsyncOpenAI`` + semaphore loop, 32 in flight
  ours-1     baize-tui's runner, concurrency 1 (40 seeds)
  ours-8     concurrency 8 (1,000 seeds)
  ours-32    concurrency 32 (1,000 seeds)

and prints dialogues/min, the share of the ideal throughput (concurrency / latency) and the
ratio to the original pattern (target at 32: >= 90 % of ideal, > 100x original).

    python bench/selfchat_bench.py [--latency 0.3] [--seeds 1000] [--original 10]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

TRANSCRIPT = ("[Human] What is a good first step?\n[AI] Start small and measure.\n"
              "[Human] And then?\n[AI] Iterate on what the numbers say.\n[Human] Thanks!")


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    """The test server in its own process; returns it and its base URL."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "openai_server.py"), "--latency", str(latency),
         "--text", TRANSCRIPT.replace("\n", "\\n")],
        stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"test server did not start: {line!r}")
    return proc, line.split()[1]


def bench_original(base_url: str, n: int) -> float:
    """Baize's collect.py loop: one sync call per seed, ``time.sleep(1)`` before each."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sk-bench")
    start = time.perf_counter()
    for i in range(n):
        time.sleep(1)
        client.chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": f"seed {i}"}])
    return time.perf_counter() - start


def bench_bare(base_url: str, n: int, concurrency: int) -> float:
    """A bare AsyncOpenAI + semaphore loop (no retries, no files): the issue's anchor."""
    import openai

    async def main() -> float:
        client = openai.AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await client.chat.completions.create(
                    model="gpt-3.5-turbo", messages=[{"role": "user", "content": f"seed {i}"}])

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        elapsed = time.perf_counter() - start
        await client.close()
        return elapsed

    return asyncio.run(main())


def bench_ours(base_url: str, n: int, concurrency: int, workdir: Path) -> tuple[float, int]:
    """baize-tui's runner end to end (seed planning, retries, raw.jsonl appends)."""
    from baize_tui.selfchat.run import open_run, run_selfchat
    from baize_tui.selfchat.runner import RunConfig
    from baize_tui.selfchat.seeds import prepare_seeds

    seeds = prepare_seeds(f"Benchmark question {i}?" for i in range(n))
    out = workdir / f"run-{concurrency}-{n}"
    cfg = RunConfig(model="gpt-3.5-turbo", base_url=base_url, concurrency=concurrency)
    store = open_run(out, cfg, seeds)
    start = time.perf_counter()
    stats = run_selfchat(cfg, seeds, store, api_key="sk-bench")
    elapsed = time.perf_counter() - start
    lines = (out / "raw.jsonl").read_bytes().count(b"\n")
    if stats.done != n or lines != n:
        raise SystemExit(f"ours-{concurrency}: {stats.done} done, {lines} lines, expected {n}")
    return elapsed, stats.retries


def main() -> None:
    """Run every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--seeds", type=int, default=1000, help="seeds at concurrency 8 and 32")
    parser.add_argument("--seeds-c1", type=int, default=40, help="seeds at concurrency 1")
    parser.add_argument("--original", type=int, default=10, help="seeds for the original pattern")
    args = parser.parse_args()
    lat = args.latency
    proc, base_url = start_server(lat)
    rows: list[tuple[str, int, int, float, float]] = []  # name, conc, n, seconds, ideal
    try:
        with tempfile.TemporaryDirectory(prefix="selfchat-bench-") as tmp:
            work = Path(tmp)
            bench_ours(base_url, 8, 4, work)  # warm-up (imports, connections)
            t = bench_original(base_url, args.original)
            rows.append(("original (sequential + 1 s sleep)", 1, args.original, t, lat))
            t = bench_bare(base_url, args.seeds, 32)
            rows.append(("bare AsyncOpenAI + semaphore", 32, args.seeds, t, lat / 32))
            for conc, n in ((1, args.seeds_c1), (8, args.seeds), (32, args.seeds)):
                t, retries = bench_ours(base_url, n, conc, work)
                if retries:
                    print(f"note: ours-{conc} needed {retries} retries", file=sys.stderr)
                rows.append((f"baize-tui selfchat, concurrency {conc}", conc, n, t, lat / conc))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    original_rate = rows[0][2] / rows[0][3] * 60
    print(f"\nself-chat throughput, local test server, {lat * 1000:.0f} ms per call "
          f"(v1: one call per dialogue)\n")
    print(f"| {'run':<38} | {'dialogues':>9} | {'seconds':>8} | {'dialogues/min':>13} | "
          f"{'% of ideal':>10} | {'x original':>10} |")
    print(f"|{'-' * 40}|{'-' * 11}|{'-' * 10}|{'-' * 15}|{'-' * 12}|{'-' * 12}|")
    for name, _conc, n, secs, per in rows:
        rate = n / secs * 60
        ideal = 60 / per
        if name.startswith("original"):
            ideal = 60 / (1 + lat)
        print(f"| {name:<38} | {n:>9} | {secs:>8.2f} | {rate:>13.1f} | {rate / ideal:>9.1%} | "
              f"{rate / original_rate:>9.1f}x |")
    print("\n% of ideal: against concurrency / latency (original: against 1 / (1 s + latency)).")


if __name__ == "__main__":
    main()
