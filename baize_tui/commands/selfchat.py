"""``baize-tui selfchat``: generate Baize-style self-chat data from any OpenAI-compatible API.

``run`` generates (and resumes), ``status`` reports on a run directory, ``export`` writes the
Baize release format or chat-messages JSONL. The work lives in ``baize_tui.selfchat``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from baize_tui.commands.argtypes import positive_float, positive_int
from baize_tui.commands.selfchat_batch import add_run_options as add_batch_options
from baize_tui.commands.selfchat_batch import register_cancel
from baize_tui.errors import OperationFailed, UserError
from baize_tui.formatting import fmt_eta


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``selfchat run|status|export``."""
    p = subparsers.add_parser(
        "selfchat",
        help="generate self-chat training dialogues (Baize's data pipeline)",
        description="Let a chat model talk with itself about seed questions, as Baize's data "
                    "was made; works with any OpenAI-compatible API and resumes where it stopped.",
    )
    sub = p.add_subparsers(dest="selfchat_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    r = sub.add_parser("run", help="generate dialogues (re-run the same command to resume)",
                       description="Generate one dialogue per seed into OUT/raw.jsonl. The API "
                                   "key comes from OPENAI_API_KEY or [openai] api_key in the config.")
    src = r.add_argument_group("seeds")
    src.add_argument("--seeds", required=True, metavar="SRC",
                     help="a .txt (one per line), .jsonl, .json or .csv file, or a preset: "
                          "quora, stackoverflow, medquad (needs datasets and the hub)")
    src.add_argument("--seed-field", metavar="FIELD",
                     help="JSON field (dotted path, e.g. questions.text.0) or CSV column")
    src.add_argument("--limit", type=positive_int, metavar="N", help="use at most N seeds")
    src.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle seeds with this seed")
    src.add_argument("--shard", metavar="I/N", help="keep shard I of N (0-based)")
    gen = r.add_argument_group("generation")
    gen.add_argument("--out", required=True, metavar="DIR", help="run directory")
    gen.add_argument("--model", required=True, metavar="NAME", help="model name, e.g. gpt-3.5-turbo")
    gen.add_argument("--base-url", metavar="URL",
                     help="OpenAI-compatible endpoint (default: config, OPENAI_BASE_URL, OpenAI)")
    gen.add_argument("--mode", choices=("v1", "v2"), default="v1",
                     help="v1: one call writes the dialogue; v2: one call per human and AI turn")
    gen.add_argument("--max-turns", type=positive_int, default=3, metavar="N",
                     help="v2: rounds per dialogue (default 3)")
    gen.add_argument("--template", metavar="FILE", help="prompt template file with {seed}")
    gen.add_argument("--temperature", type=float, help="sampling temperature (default: API's)")
    gen.add_argument("--max-tokens", type=positive_int, metavar="N",
                     help="max tokens per call (default: API's)")
    gen.add_argument("--min-turns", type=positive_int, default=1, metavar="N",
                     help="reject dialogues with fewer complete turns (default 1)")
    lim = r.add_argument_group("limits")
    lim.add_argument("--concurrency", type=positive_int, default=8, metavar="N",
                     help="requests in flight (default 8)")
    lim.add_argument("--rpm", type=positive_float, help="requests per minute cap")
    lim.add_argument("--tpm", type=positive_float, help="tokens per minute cap")
    lim.add_argument("--max-retries", type=int, default=8, metavar="N",
                     help="retries per call on 429/5xx/timeouts (default 8)")
    lim.add_argument("--timeout", type=positive_float, default=120.0, metavar="S",
                     help="seconds per request (default 120)")
    lim.add_argument("--max-tokens-total", type=positive_int, metavar="N",
                     help="stop cleanly once the run used this many tokens")
    lim.add_argument("--max-cost", type=positive_float, metavar="USD",
                     help="stop cleanly at this spend (prices from [selfchat.prices])")
    misc = r.add_argument_group("run")
    misc.add_argument("--retry-rejected", action="store_true",
                      help="also retry seeds that failed permanently or were rejected")
    misc.add_argument("--fsync", action="store_true", help="fsync after every dialogue")
    misc.add_argument("--force", action="store_true",
                      help="resume even though the settings differ from the run's")
    misc.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_batch_options(r)
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="summarize a run directory")
    s.add_argument("dir", metavar="DIR")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_status)

    e = sub.add_parser("export", help="write finished dialogues for training")
    e.add_argument("dir", metavar="DIR")
    e.add_argument("--format", choices=("baize", "messages"), default="baize",
                   help="baize: released JSON format; messages: chat JSONL")
    e.add_argument("-o", "--output", required=True, metavar="FILE")
    e.add_argument("--keep-last-turn", action="store_true",
                   help="keep the transcript's last turn (preprocess.py drops it)")
    e.set_defaults(func=cmd_export)
    register_cancel(sub)




def _describe(stats: Any) -> str:
    cost = "" if stats.cost is None else f" ${stats.cost:.4f}"
    pause = stats.paused_until - time.monotonic()
    waiting = f" [yellow]paused {pause:.0f}s[/]" if pause > 0.5 else ""
    return (f"ok {stats.previously_done + stats.done} fail {stats.failed} rej {stats.rejected} "
            f"fly {stats.in_flight} retry {stats.retries} | {stats.per_minute():.1f}/min | "
            f"{stats.tokens / 1000:.1f}k tok{cost} | eta {fmt_eta(stats.eta())}{waiting}")


def _open_live_or_batch_run(args: argparse.Namespace, err: Any) -> tuple[Any, ...]:
    """(config, api_key, run_config, seeds, store) for ``selfchat run``: the run directory is
    opened (or resumed); a live run refuses a directory with open batch jobs."""
    from baize_tui.config import load_config
    from baize_tui.selfchat.run import open_run, price_for, resolve_api_key, resolve_base_url
    from baize_tui.selfchat.runner import RunConfig
    from baize_tui.selfchat.seeds import load_seeds, parse_shard
    from baize_tui.selfchat.templates import load_template

    config = load_config()
    base_url = resolve_base_url(args.base_url, config)
    api_key = resolve_api_key(base_url, config)
    template = load_template(args.template)
    shard = parse_shard(args.shard)
    seeds = load_seeds(args.seeds, field=args.seed_field, shuffle=args.shuffle, shard=shard,
                       limit=args.limit)
    if not seeds:
        raise UserError(f"{args.seeds}: no seeds (after dropping empty lines and duplicates)")
    run_config = RunConfig(
        model=args.model, base_url=base_url, mode=args.mode, max_turns=args.max_turns,
        template=template, concurrency=args.concurrency, rpm=args.rpm, tpm=args.tpm,
        temperature=args.temperature, max_tokens=args.max_tokens,
        max_retries=max(0, args.max_retries), timeout=args.timeout,
        max_tokens_total=args.max_tokens_total, max_cost=args.max_cost,
        min_turns=args.min_turns, fsync=args.fsync, retry_rejected=args.retry_rejected,
        price=price_for(args.model, config),
    )
    seeds_info = {"source": args.seeds, "field": args.seed_field, "shuffle": args.shuffle,
                  "shard": args.shard, "limit": args.limit}
    if not args.batch:
        from baize_tui.selfchat.batch_ops import open_job_count

        if open_job_count(args.out):
            raise UserError(f"{args.out} has open batch jobs: add --batch to collect them (or "
                            "`selfchat cancel` them first); a live run would pay for them twice")
    store = open_run(args.out, run_config, seeds, seeds_info=seeds_info, force=args.force)
    for warning in store.warnings:
        err.print(f"[yellow]warning:[/] {warning}")
    return config, api_key, run_config, seeds, store


def _stop_on_signals(runner: Any, console: Any) -> None:
    """First Ctrl+C (or SIGTERM): start no new dialogue, let those in flight finish; the second
    cancels the run's task (the dialogues in flight are abandoned)."""
    import asyncio

    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    presses = {"n": 0}

    def on_sigint() -> None:
        presses["n"] += 1
        if presses["n"] == 1:
            console.print(
                f"stopping: finishing {runner.stats.in_flight} dialogue(s) in flight "
                "(Ctrl+C again to abandon them; re-run the same command to resume)")
            runner.stop("interrupted")
        elif main_task is not None:
            main_task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
    except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
        pass


class _LiveProgress:
    """A live run's progress bar on stderr, fed by the runner's events and a 4 Hz ticker."""

    def __init__(self, total: int, err: Any, disable: bool) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(TextColumn("selfchat"), BarColumn(bar_width=24),
                                 MofNCompleteColumn(), TextColumn("{task.description}"),
                                 console=err, disable=disable, transient=False,
                                 refresh_per_second=4)
        self.task = self.progress.add_task("", total=total)
        self.runner: Any = None
        self.ticker: Any = None
        self._shown: set[str] = set()

    def show(self, stats: Any) -> None:
        """Draw ``stats`` (the runner's counters)."""
        self.progress.update(self.task, completed=stats.previously_done + stats.done
                             + stats.failed + stats.rejected, description=_describe(stats))

    def on_event(self, event: Any) -> None:
        """The runner's event hook: print each distinct error or notice once, redraw."""
        if event.kind in ("error", "notice") and event.message not in self._shown:
            self._shown.add(event.message)
            self.progress.console.print(f"[red]{event.kind}:[/] {event.message}"
                                        if event.kind == "error"
                                        else f"[yellow]note:[/] {event.message}")
        self.show(self.runner.stats)

    def on_start(self, runner: Any) -> None:
        """The runner's start hook (on its event loop): signals, and the ticker."""
        import asyncio

        self.runner = runner
        _stop_on_signals(runner, self.progress.console)
        self.ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        import asyncio

        while True:
            self.show(self.runner.stats)
            await asyncio.sleep(0.25)


def _drive_live(live: _LiveProgress, run_config: Any, seeds: list[Any], store: Any,
                api_key: str) -> tuple[Any, str | None, bool]:
    """Run to the end under the progress bar: (stats or None, fatal error, interrupted)."""
    import asyncio

    from baize_tui.selfchat.run import run_selfchat
    from baize_tui.selfchat.runner import FatalRunError

    fatal: str | None = None
    interrupted = False
    stats: Any = None
    with live.progress:
        try:
            stats = run_selfchat(run_config, seeds, store, api_key=api_key,
                                 on_event=live.on_event, on_start=live.on_start)
        except FatalRunError as exc:
            fatal = str(exc)
            stats = live.runner.stats
        except (asyncio.CancelledError, KeyboardInterrupt):
            interrupted = True
            stats = live.runner.stats if live.runner is not None else None
        if stats is not None:
            live.show(stats)
    return stats, fatal, interrupted


def _finish_live(stats: Any, store: Any, fatal: str | None, interrupted: bool) -> int:
    """Print the run's summary line; the exit status (raises on a fatal error)."""
    cost = "" if stats.cost is None else f", ${stats.cost:.4f}"
    reasons = ", ".join(f"{k} {v}" for k, v in stats.reasons.most_common())
    print(f"{stats.previously_done + stats.done}/{stats.total} done ({stats.done} new, "
          f"{stats.previously_done} earlier), {stats.failed} failed, {stats.rejected} rejected"
          f"{' (' + reasons + ')' if reasons else ''}, {stats.retries} retries, "
          f"{stats.tokens:,} tokens{cost}, {stats.per_minute():.1f} dialogues/min -> {store.dir}")
    if fatal:
        raise OperationFailed(fatal)
    if interrupted or stats.stop_reason in ("interrupted", "cancelled"):
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    if stats.stop_reason not in ("finished", ""):
        print(f"stopped: {stats.stop_reason}", file=sys.stderr)
    from baize_tui.selfchat.outcome import run_outcome

    return run_outcome(stats, store.dir)


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a self-chat generation."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False)
    config, api_key, run_config, seeds, store = _open_live_or_batch_run(args, err)
    if args.batch:
        from baize_tui.commands.selfchat_batch import run_batch

        return run_batch(args, run_config, seeds, store, api_key, config)
    live = _LiveProgress(len(seeds), err, args.no_progress)
    stats, fatal, interrupted = _drive_live(live, run_config, seeds, store, api_key)
    if stats is None:
        return 130
    return _finish_live(stats, store, fatal, interrupted)


def cmd_status(args: argparse.Namespace) -> int:
    """Print a run directory's summary."""
    from baize_tui.selfchat.run import summarize

    info = summarize(args.dir)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    seeds = "?" if info["seeds"] is None else info["seeds"]
    cost = "unknown" if info["cost"] is None else f"${info['cost']:.4f}"
    lines = [
        f"run       {info['dir']}",
        f"model     {info['model']} ({info['mode']}) at {info['endpoint']}",
        f"seeds     {seeds}",
        f"done      {info['done']} (avg {info['avg_turns']} turns)",
        f"failed    {info['failed']}",
        f"rejected  {info['rejected']}",
        f"remaining {'?' if info['remaining'] is None else info['remaining']}",
        f"tokens    {info['tokens_in']:,} in, {info['tokens_out']:,} out",
        f"cost      {cost}",
    ]
    for reason, count in info["reasons"].items():
        lines.append(f"  {reason}: {count}")
    for warning in info["warnings"]:
        lines.append(f"warning: {warning}")
    if info.get("batch"):
        from baize_tui.commands.selfchat_batch import batch_status_lines

        lines += batch_status_lines(info["batch"])
    print("\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Export finished dialogues."""
    from baize_tui.selfchat.export import export_run

    result = export_run(args.dir, args.format, args.output, keep_last_turn=args.keep_last_turn)
    print(f"wrote {result.written} dialogue(s) to {result.path}"
          + (f" ({result.skipped} without a kept turn)" if result.skipped else ""))
    for warning in result.warnings:
        print(f"baize-tui: warning: {warning} (left out of the export)", file=sys.stderr)
    return 0
