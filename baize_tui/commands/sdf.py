"""``baize-tui sdf``: Baize v2's self-distillation with feedback, step by step.

``sample`` draws N candidates per prompt from the model, ``judge`` has a chat model score them,
``export`` writes the best reply per prompt as training data, ``status`` reports. The work
lives in ``baize_tui.sdf``; every step resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from typing import Any

from baize_tui.commands.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from baize_tui.errors import OperationFailed, UserError
from baize_tui.formatting import fmt_eta
from baize_tui.termtext import echo, rich_safe


def _add_sample(sub: argparse._SubParsersAction) -> None:
    from baize_tui.engines import SPEC_HELP

    s = sub.add_parser("sample", help="sample N candidate replies per prompt (resumable)",
                       description="Sample N replies per prompt from the model being improved "
                                   "into DIR/candidates.jsonl; re-run the same command to resume.")
    s.add_argument("--prompts", required=True, metavar="SRC",
                   help="prompts: a .txt, .jsonl, .json or .csv file, or a preset (quora, ...)")
    s.add_argument("--prompt-field", metavar="FIELD", help="JSON field or CSV column")
    s.add_argument("--limit", type=positive_int, metavar="N", help="use at most N prompts")
    s.add_argument("--shuffle", type=int, metavar="SEED", help="shuffle prompts with this seed")
    s.add_argument("--model", required=True, metavar="SPEC", help=f"the model: {SPEC_HELP}")
    s.add_argument("--base-url", metavar="URL", help="endpoint for --model openai:MODEL")
    s.add_argument("--n", type=positive_int, default=4, help="candidates per prompt (default 4)")
    s.add_argument("--out", required=True, metavar="DIR", help="run directory")
    s.add_argument("--concurrency", type=positive_int, default=4, metavar="N",
                   help="requests in flight for openai:MODEL (default 4; local models: 1)")
    s.add_argument("--temperature", type=non_negative_float, default=1.0, help="sampling temperature (1.0)")
    s.add_argument("--top-p", type=probability, default=0.95, help="top-p, local models (0.95)")
    s.add_argument("--max-tokens", type=positive_int, default=512, metavar="N",
                   help="max tokens per candidate (512)")
    s.add_argument("--seed", type=int, default=0, help="seed of the candidates' sampling seeds")
    s.add_argument("--no-batch", action="store_true",
                   help="GGUF: sample the candidates one by one instead of in one batch")
    s.add_argument("--retry-failed", action="store_true",
                   help="also retry prompts that failed permanently")
    s.add_argument("--force", action="store_true", help="resume despite changed settings")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample)


def _add_judge(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("judge", help="score every prompt's candidates with a chat model",
                       description="Ask a chat model (OpenAI-compatible API) for one 1-100 score "
                                   "per candidate; the best per prompt is kept. The API key "
                                   "comes from OPENAI_API_KEY or [openai] api_key.")
    j.add_argument("dir", metavar="DIR", nargs="?", help="run directory (from sdf sample)")
    j.add_argument("--judge", metavar="openai:MODEL", help="the judge, e.g. openai:gpt-4o-mini")
    j.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint")
    j.add_argument("--concurrency", type=positive_int, default=8, metavar="N",
                   help="requests in flight (default 8)")
    j.add_argument("--seed", type=int, default=0, help="seed of the per-prompt shuffles (0)")
    j.add_argument("--temperature", type=non_negative_float, help="judge temperature (default: API's)")
    j.add_argument("--max-tokens", type=positive_int, metavar="N", help="max tokens per reply")
    j.add_argument("--parse-retries", type=non_negative_int, default=2, metavar="N",
                   help="ask again after an unreadable reply, N times (default 2)")
    j.add_argument("--rpm", type=positive_float, help="requests per minute cap")
    j.add_argument("--tpm", type=positive_float, help="tokens per minute cap")
    j.add_argument("--max-retries", type=non_negative_int, default=8, metavar="N",
                   help="retries per call on 429/5xx/timeouts (default 8)")
    j.add_argument("--timeout", type=positive_float, default=120.0, metavar="S")
    j.add_argument("--max-cost", type=positive_float, metavar="USD", help="stop at this spend")
    j.add_argument("--show-prompt", action="store_true", help="print the judging prompt and exit")
    j.add_argument("--force", action="store_true", help="resume despite changed settings")
    j.add_argument("--no-progress", action="store_true", help="no progress bar")
    j.set_defaults(func=cmd_judge)


def _add_run(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("run", help="sample, then judge, in one go (what the TUI starts)",
                       description="`sdf sample` followed by `sdf judge` on the same directory; "
                                   "stops after sampling when interrupted. Re-run to resume.")
    r.add_argument("--prompts", required=True, metavar="SRC")
    r.add_argument("--model", required=True, metavar="SPEC")
    r.add_argument("--base-url", metavar="URL", help="endpoint for --model openai:MODEL")
    r.add_argument("--n", type=positive_int, default=4)
    r.add_argument("--out", required=True, metavar="DIR")
    r.add_argument("--concurrency", type=positive_int, default=4, metavar="N")
    r.add_argument("--max-tokens", type=positive_int, default=512, metavar="N")
    r.add_argument("--limit", type=positive_int, metavar="N")
    r.add_argument("--judge", required=True, metavar="openai:MODEL")
    r.add_argument("--judge-base-url", metavar="URL")
    r.add_argument("--judge-concurrency", type=positive_int, default=8, metavar="N")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--no-progress", action="store_true")
    r.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """``sdf sample`` then ``sdf judge`` with the same directory."""
    from baize_tui.cli import build_parser

    quiet = ["--no-progress"] if args.no_progress else []
    sample = ["sdf", "sample", "--prompts", args.prompts, "--model", args.model, "--n",
              str(args.n), "--out", args.out, "--concurrency", str(args.concurrency),
              "--max-tokens", str(args.max_tokens), "--seed", str(args.seed), *quiet]
    if args.base_url:
        sample += ["--base-url", args.base_url]
    if args.limit:
        sample += ["--limit", str(args.limit)]
    judge = ["sdf", "judge", args.out, "--judge", args.judge, "--concurrency",
             str(args.judge_concurrency), "--seed", str(args.seed), *quiet]
    if args.judge_base_url:
        judge += ["--base-url", args.judge_base_url]
    parser = build_parser()
    for argv in (sample, judge):
        ns = parser.parse_args(argv)
        code = int(ns.func(ns) or 0)
        if code:
            return code
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sdf sample|judge|export|status``."""
    p = subparsers.add_parser(
        "sdf", help="self-distillation with feedback (Baize v2): sample, judge, export",
        description="Baize v2's recipe: the model samples N replies per prompt, a chat model "
                    "scores them, the best become training data for a new LoRA "
                    "(train run --init-adapter SFT_ADAPTER).")
    sub = p.add_subparsers(dest="sdf_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _add_sample(sub)
    _add_judge(sub)
    _add_run(sub)
    e = sub.add_parser("export", help="write the best reply per prompt as training data")
    e.add_argument("dir", metavar="DIR")
    e.add_argument("-o", "--output", required=True, metavar="FILE")
    e.add_argument("--format", choices=("messages", "baize"), default="messages",
                   help="messages: chat JSONL (default); baize: released JSON format")
    e.add_argument("--min-score", type=positive_int, metavar="N",
                   help="leave out prompts whose best score is below N")
    e.set_defaults(func=cmd_export)
    st = sub.add_parser("status", help="counts, score histogram and failures of a run")
    st.add_argument("dir", metavar="DIR")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(func=cmd_status)


def _describe(stats: Any) -> str:
    cost = "" if stats.cost is None else f" ${stats.cost:.4f}"
    return (f"ok {stats.previously_done + stats.done} fail {stats.failed} "
            f"retry {stats.retries} | {stats.per_minute():.1f}/min | "
            f"{stats.tokens / 1000:.1f}k tok{cost} | eta {fmt_eta(stats.eta())}")


def _drive(label: str, total: int, no_progress: bool,
           run: Callable[[Callable[[Any], None], Callable[[Any], None]], Any]) -> tuple[Any, Any]:
    """Run with a progress bar and Ctrl+C = stop cleanly; returns (stats, runner)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    err = Console(stderr=True, highlight=False)
    progress = Progress(TextColumn(label), BarColumn(bar_width=24), MofNCompleteColumn(),
                        TextColumn("{task.description}"), console=err, disable=no_progress,
                        transient=False, refresh_per_second=4)
    task = progress.add_task("", total=total)
    holder: dict[str, Any] = {}
    shown: set[str] = set()

    def update() -> None:
        stats = holder["runner"].stats
        progress.update(task, completed=stats.previously_done + stats.done + stats.failed
                        + getattr(stats, "rejected", 0), description=_describe(stats))

    def on_event(event: Any) -> None:
        if event.kind in ("error", "notice") and event.message not in shown:
            shown.add(event.message)
            progress.console.print(f"[red]{event.kind}:[/] {rich_safe(event.message)}")
        if "runner" in holder:
            update()

    def on_start(runner: Any) -> None:
        holder["runner"] = runner

        def on_signal(signum: int, frame: Any) -> None:
            progress.console.print("stopping after the work in flight (re-run to resume)")
            runner.stop("interrupted")

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with progress:
            stats = run(on_event, on_start)
            if "runner" in holder:
                update()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stats, holder.get("runner")


def _finish(what: str, stats: Any, fatal: str | None) -> int:
    cost = "" if stats.cost is None else f", ${stats.cost:.4f}"
    reasons = ", ".join(f"{k} {v}" for k, v in stats.reasons.most_common())
    echo(f"{what}: {stats.previously_done + stats.done}/{stats.total} done ({stats.done} new), "
         f"{stats.failed} failed{' (' + reasons + ')' if reasons else ''}, {stats.retries} "
         f"retries, {stats.tokens:,} tokens{cost}, {stats.per_minute():.1f}/min")
    if fatal:
        raise OperationFailed(fatal)
    if stats.stop_reason == "interrupted":
        print("interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    if stats.stop_reason not in ("finished", ""):
        echo(f"stopped: {stats.stop_reason}", file=sys.stderr)
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Sample (or resume sampling) candidates."""
    from baize_tui.config import load_config
    from baize_tui.sdf.sample import SampleConfig, open_sample, run_sample
    from baize_tui.selfchat.run import resolve_api_key, resolve_base_url
    from baize_tui.selfchat.runner import FatalRunError
    from baize_tui.selfchat.seeds import load_seeds

    config = load_config()
    remote = args.model.startswith("openai:")
    base_url = resolve_base_url(args.base_url, config) if remote else None
    api_key = resolve_api_key(base_url, config) if base_url else ""
    prompts = load_seeds(args.prompts, field=args.prompt_field, shuffle=args.shuffle,
                         limit=args.limit)
    if not prompts:
        raise UserError(f"{args.prompts}: no prompts (after dropping empty lines and duplicates)")
    cfg = SampleConfig(model=args.model, n=args.n, temperature=args.temperature,
                       top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed,
                       concurrency=args.concurrency if remote else 1, base_url=base_url,
                       retry_failed=args.retry_failed, batched=not args.no_batch)
    info = {"source": args.prompts, "field": args.prompt_field, "shuffle": args.shuffle,
            "limit": args.limit}
    store = open_sample(args.out, cfg, prompts, prompts_info=info, force=args.force)
    for warning in store.warnings:
        echo(f"warning: {warning}", file=sys.stderr)
    fatal: str | None = None
    try:
        stats, runner = _drive("sample", len(prompts), args.no_progress,
                               lambda ev, st: run_sample(cfg, prompts, store, api_key=api_key,
                                                         on_event=ev, on_start=st))
    except FatalRunError as exc:
        fatal, stats = str(exc), None
    if stats is None:
        raise OperationFailed(fatal or "sampling failed")
    return _finish(f"sampled into {store.dir}", stats, fatal)


def cmd_judge(args: argparse.Namespace) -> int:
    """Judge (or resume judging) the sampled candidates."""
    from baize_tui.sdf import judge as jd

    if args.show_prompt:
        print(f"[system]\n{jd.JUDGE_SYSTEM}\n\n[user]\n"
              + jd.render_judge_prompt("{question}", [f"{{answer {k}}}" for k in range(1, 5)]))
        print(f"\n(candidates are shown in an order shuffled per prompt; ties go to the "
              f"candidate sampled first; prompt sha256 {jd.prompt_fingerprint()})")
        return 0
    if not args.dir or not args.judge:
        raise UserError("sdf judge needs DIR and --judge openai:MODEL (or --show-prompt)")
    kind, _, model = args.judge.partition(":")
    if kind != "openai" or not model:
        raise UserError(f"--judge {args.judge!r}: expected openai:MODEL (any OpenAI-compatible "
                        "API; --base-url for other servers)")
    from baize_tui.config import load_config
    from baize_tui.sdf.judge_run import open_judge, run_judge
    from baize_tui.sdf.runners import JudgeSettings
    from baize_tui.selfchat.run import price_for, resolve_api_key, resolve_base_url
    from baize_tui.selfchat.runner import FatalRunError, RunConfig

    config = load_config()
    base_url = resolve_base_url(args.base_url, config)
    api_key = resolve_api_key(base_url, config)
    run_config = RunConfig(model=model, base_url=base_url, concurrency=args.concurrency,
                           rpm=args.rpm, tpm=args.tpm, temperature=args.temperature,
                           max_tokens=args.max_tokens, max_retries=args.max_retries,
                           timeout=args.timeout, max_cost=args.max_cost,
                           price=price_for(model, config))
    settings = JudgeSettings(seed=args.seed, parse_retries=args.parse_retries)
    store, items = open_judge(args.dir, run_config, settings, force=args.force)
    for warning in store.warnings:
        echo(f"warning: {warning}", file=sys.stderr)
    fatal: str | None = None
    holder: dict[str, Any] = {}

    def go(ev: Any, st: Any) -> Any:
        def start(runner: Any) -> None:
            holder["runner"] = runner
            st(runner)
        return run_judge(run_config, items, store, api_key=api_key, settings=settings,
                         on_event=ev, on_start=start)

    try:
        stats, _ = _drive("judge", len(items), args.no_progress, go)
    except FatalRunError as exc:
        fatal = str(exc)
        stats = holder["runner"].stats
    return _finish(f"judged in {store.dir}", stats, fatal)


def cmd_export(args: argparse.Namespace) -> int:
    """Export the best replies."""
    from baize_tui.sdf.export import export_best

    result = export_best(args.dir, args.output, fmt=args.format, min_score=args.min_score)
    extra = []
    if result.below_min:
        extra.append(f"{result.below_min} below --min-score")
    if result.unmatched:
        extra.append(f"{result.unmatched} verdict(s) without their candidates")
    echo(f"wrote {result.written} prompt(s) with their best reply to {result.path}"
         + (f" ({', '.join(extra)})" if extra else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print a run directory's summary."""
    from baize_tui.sdf.status import histogram_lines, summarize

    info = summarize(args.dir)
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    cost = (f"${info['judge_cost']:.4f}" if info["judge_cost"] is not None
            else "cost unknown (no price for this judge: add it under [selfchat.prices] in the "
            "config)" if info["judge"] else "-")
    lines = [
        f"run        {info['dir']}",
        f"model      {info['model']} (n={info['n']})",
        f"judge      {info['judge'] or '-'} at {info['judge_endpoint'] or '-'}",
        f"prompts    {'?' if info['prompts'] is None else info['prompts']}",
        f"sampled    {info['sampled']} ({info['sample_failed']} failed)",
        f"judged     {info['judged']} ({info['judge_failed']} failed, {info['to_judge']} to go, "
        f"{info['ties']} ties)",
        f"mean best  {info['mean_best'] if info['mean_best'] is not None else '-'}",
        f"judge use  {info['judge_tokens_in']:,} in, {info['judge_tokens_out']:,} out, {cost}",
    ]
    for title, key in (("sample failures", "sample_reasons"), ("judge failures", "judge_reasons")):
        for reason, count in info[key].items():
            lines.append(f"  {title}: {reason} {count}")
    lines.append("best score per prompt:")
    lines += histogram_lines(info["best_histogram"])
    lines.append("all scores:")
    lines += histogram_lines(info["score_histogram"])
    lines += [f"warning: {w}" for w in info["warnings"]]
    echo("\n".join(lines))
    return 0
