"""Benchmark: batch-mode self-chat at corpus scale against the local Batch API server.

10,000 seeds in v2 mode with 3 rounds (``--seeds``, ``--rounds``), against
tests/batch_server.py in its own process (so its CPU is not counted), twice:

  clean      every job completes
  expiring   the 3rd job expires after half its requests (resubmitted in the next step)

For each it prints the submitted batches, requests and bytes against the minimum possible
(batches: 2 x rounds + extra shards; requests: one per human and AI turn; bytes: each
distinct request line once), whether any request was submitted twice, and this process's
CPU time per 1,000 dialogues spent preparing (building and writing input files) and
collecting (parsing results, rebuilding dialogues, appending raw.jsonl), target < 1 s.

The anchor, run in the same process: a bare ``json.dumps`` of every request line plus a
bare ``json.loads`` of every result line (the least any batch client must do); the ratio of
our CPU to the anchor's survives a loaded machine better than the absolute figures.

    python bench/selfchat_batch_bench.py [--seeds 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def start_server(*extra: str) -> tuple[subprocess.Popen, str]:
    """The batch server in its own process; returns it and its base URL."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "batch_server.py"),
                             "--text", "Tell me more about that, please.", *extra],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"batch server did not start: {line!r}")
    return proc, line.split()[1]


def run_case(name: str, n: int, rounds: int, extra: list[str]) -> dict:
    from baize_tui.selfchat.batch import BatchOptions, BatchRunner
    from baize_tui.selfchat.run import open_run
    from baize_tui.selfchat.runner import RunConfig
    from baize_tui.selfchat.seeds import load_seeds

    proc, base_url = start_server(*extra)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            seeds_file = Path(tmp) / "seeds.txt"
            seeds_file.write_text("".join(f"How do I solve problem number {i} in my garden?\n"
                                          for i in range(n)), encoding="utf-8")
            cfg = RunConfig(model="gpt-3.5-turbo", base_url=base_url, mode="v2", max_turns=rounds)
            seeds = load_seeds(str(seeds_file))
            store = open_run(Path(tmp) / "run", cfg, seeds)
            wall = time.perf_counter()
            runner = BatchRunner(cfg, seeds, store, api_key="sk-bench",
                                 options=BatchOptions(poll_interval=0.0))
            stats = runner.run()
            wall = time.perf_counter() - wall
            store.close()
            inputs = sorted((Path(tmp) / "run" / "batch").glob("*.input.jsonl"))
            outputs = sorted((Path(tmp) / "run" / "batch").glob("*.output.jsonl"))
            lines = [ln for p in inputs for ln in p.read_bytes().splitlines(keepends=True)]
            results = [ln for p in outputs for ln in p.read_bytes().splitlines()]
            first: dict[str, int] = {}
            for ln in lines:
                first.setdefault(json.loads(ln)["custom_id"], len(ln))
            # the anchor: the bare serialisation work of the same lines
            bodies = [json.loads(ln) for ln in lines]
            a0 = time.process_time()
            for body in bodies:
                json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            for ln in results:
                json.loads(ln)
            anchor = time.process_time() - a0
    finally:
        proc.kill()
        proc.wait()
    cpu = stats.prepare_s + stats.collect_s
    return {
        "case": name, "dialogues": stats.done, "batches": stats.jobs, "min_batches": 2 * rounds,
        "requests": stats.requests, "min_requests": 2 * rounds * n,
        "distinct_requests": len(first), "bytes": stats.bytes, "min_bytes": sum(first.values()),
        "prepare_s": stats.prepare_s, "collect_s": stats.collect_s,
        "cpu_per_1000": cpu / max(1, stats.done) * 1000, "anchor_per_1000": anchor / max(1, stats.done) * 1000,
        "ratio": cpu / anchor if anchor else float("nan"), "wall_s": wall,
    }


def main() -> None:
    """Run both cases and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cases = [run_case("clean", args.seeds, args.rounds, []),
             run_case("expiring", args.seeds, args.rounds, ["--expire", f"3:{args.seeds // 2}"])]
    print(f"{'case':<9} {'dialogues':>9} {'batches':>9} {'requests (min)':>17} {'distinct':>9} "
          f"{'MB (min)':>15} {'prep+collect CPU s/1k':>22} {'anchor s/1k':>12} {'ratio':>6}")
    for r in cases:
        print(f"{r['case']:<9} {r['dialogues']:>9,} {r['batches']:>4} ({r['min_batches']}) "
              f"{r['requests']:>9,} ({r['min_requests']:,}) {r['distinct_requests']:>9,} "
              f"{r['bytes'] / 1e6:>6.1f} ({r['min_bytes'] / 1e6:.1f}) "
              f"{r['cpu_per_1000']:>22.3f} {r['anchor_per_1000']:>12.3f} {r['ratio']:>6.1f}")
    print("prepare / collect CPU s:", ", ".join(f"{r['case']} {r['prepare_s']:.2f} / {r['collect_s']:.2f}"
                                                for r in cases))
    print("(shared, loaded 2-core VM: absolute CPU figures vary; the ratio to the anchor is steadier)")


if __name__ == "__main__":
    main()
