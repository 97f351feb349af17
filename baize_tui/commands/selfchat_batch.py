"""``baize-tui selfchat run --batch`` and ``selfchat cancel``: self-chat through the Batch API.

The options join ``selfchat run``; the work lives in ``baize_tui.selfchat.batch``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from baize_tui.commands.argtypes import positive_float, positive_int
from baize_tui.errors import OperationFailed
from baize_tui.termtext import echo


def add_run_options(run_parser: argparse.ArgumentParser) -> None:
    """Add ``--batch`` and its options to ``selfchat run``."""
    b = run_parser.add_argument_group("batch API (half price, results within 24 h per step)")
    b.add_argument("--batch", action="store_true",
                   help="submit through the provider's Batch API; re-run the same command "
                        "to poll, collect and resume (even days later)")
    b.add_argument("--poll", type=positive_float, default=60.0, metavar="S",
                   help="batch: seconds between status polls (default 60)")
    b.add_argument("--detach", action="store_true",
                   help="batch: submit/collect what is ready, then exit instead of waiting")
    b.add_argument("--batch-attempts", type=positive_int, default=3, metavar="N",
                   help="batch: submissions per request before its dialogue fails (default 3)")
    b.add_argument("--batch-max-requests", type=positive_int, default=None, metavar="N",
                   help="batch: requests per job (default 45,000; the provider allows 50,000)")


def register_cancel(sub: argparse._SubParsersAction) -> None:
    """Add ``selfchat cancel DIR``."""
    c = sub.add_parser("cancel", help="cancel a run's open batch jobs",
                       description="Ask the provider to cancel every open batch job of the run; "
                                   "what finished is collected by the next `run --batch`, "
                                   "which also resubmits the rest.")
    c.add_argument("dir", metavar="DIR")
    c.add_argument("--base-url", metavar="URL", help="endpoint (default: the run's)")
    c.set_defaults(func=cmd_cancel)


def cmd_cancel(args: argparse.Namespace) -> int:
    """Cancel open batch jobs."""
    from baize_tui.config import load_config
    from baize_tui.selfchat.batch_ops import cancel_jobs
    from baize_tui.selfchat.run import resolve_api_key, resolve_base_url
    from baize_tui.selfchat.store import RunStore

    config = load_config()
    state = RunStore(args.dir, create=False, readonly=True).read_state() or {}
    base_url = resolve_base_url(args.base_url or (state.get("config") or {}).get("base_url"), config)
    lines = cancel_jobs(args.dir, base_url=base_url, api_key=resolve_api_key(base_url, config))
    echo("\n".join(lines) if lines else "no open batch jobs")
    return 0


def run_batch(args: argparse.Namespace, run_config: Any, seeds: list[Any], store: Any,
              api_key: str, config: dict[str, Any]) -> int:
    """Run (or resume) a batch-mode self-chat; prints progress lines."""
    from baize_tui.selfchat.batch import BatchOptions, BatchRunner
    from baize_tui.selfchat.batch_ops import batch_discount, batch_price
    from baize_tui.selfchat.runner import FatalRunError

    discount = batch_discount(config)
    run_config.price = batch_price(run_config.price, discount)
    options = BatchOptions(poll_interval=args.poll, max_attempts=args.batch_attempts,
                           discount=discount, wait=not args.detach)
    if args.batch_max_requests:
        options.max_requests = args.batch_max_requests

    def on_event(event: Any) -> None:
        if event.kind in ("batch", "notice", "error", "stop"):
            echo(f"{event.kind}: {event.message}", file=sys.stderr, flush=True)

    try:
        runner = BatchRunner(run_config, seeds, store, api_key=api_key, options=options,
                             on_event=on_event)
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

        def on_signal(signum: int, frame: Any) -> None:
            print("stopping: the jobs keep running at the provider; re-run the same command "
                  "to collect them", file=sys.stderr, flush=True)
            runner.stop("interrupted")

        for s in previous:
            signal.signal(s, on_signal)
        try:
            stats = runner.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    except FatalRunError as exc:
        raise OperationFailed(str(exc)) from None
    finally:
        store.close()
    cost = "" if stats.cost is None else f", ${stats.cost:.4f} at the batch price"
    echo(f"{stats.previously_done + stats.done}/{stats.total} done ({stats.done} new), "
         f"{stats.failed} failed, {stats.rejected} rejected, {stats.live} in progress; "
         f"{stats.jobs} job(s) / {stats.requests:,} requests submitted this session; "
         f"{stats.tokens_in + stats.tokens_out:,} tokens{cost} -> {store.dir}")
    if stats.stop_reason == "interrupted":
        return 130
    if stats.stop_reason == "detached":
        print("jobs are running at the provider; re-run the same command to collect them",
              file=sys.stderr)
        return 0  # nothing is decided yet: the jobs are still running
    if stats.stop_reason not in ("finished", ""):
        echo(f"stopped: {stats.stop_reason}", file=sys.stderr)
    from baize_tui.selfchat.outcome import run_outcome

    return run_outcome(stats, store.dir)  # like a live run: completing nothing is a failure


def batch_status_lines(info: dict[str, Any]) -> list[str]:
    """``selfchat status`` lines for the batch section."""
    lines = [f"batch     {info['steps']} step(s), {info['submitted_jobs']} job(s), "
             f"{info['submitted_requests']:,} requests, {info['submitted_bytes'] / 1e6:.1f} MB "
             f"submitted; {info['results_ok']:,} results ok, {info['results_failed']:,} failed rows"]
    for job in info["jobs"][-12:]:
        counts = job["counts"] or {}
        done = f"{counts.get('completed', 0)}/{counts.get('total', job['requests'])}"
        cost = "" if job["estimate_cost"] is None else f" est ${job['estimate_cost']:.4f}"
        lines.append(f"  {job['key']} {job['status']:<11} {done:>13} {job['batch_id'] or '-'}"
                     f"{cost}; next: {job['next']}")
        lines += [f"    error: {e}" for e in job["errors"]]
    if len(info["jobs"]) > 12:
        lines.insert(1, f"  ({len(info['jobs']) - 12} earlier jobs not shown)")
    lines.append(f"next      {info['next']}")
    return lines
