"""The self-chat screen's Batch API half: launch, drive in a thread, draw the job states.

Mixed into :class:`~baize_tui.ui.selfchat_screen.SelfChatScreen`. A batch run is a
:class:`~baize_tui.selfchat.batch.BatchRunner` driven in an app-level **thread** worker (its
openai client is synchronous and mostly waits between polls), so the screen can be closed
while jobs run; closing the app stops the poller, never the jobs, and the next Start (or
``selfchat run --batch``) collects them. With no run going, the panel shows the jobs saved
in the run directory, so reopening the screen shows where they are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual.widgets import Button, Input, Select, Static

BATCH_POLL_SECONDS = 30.0  # config [selfchat] batch_poll_seconds overrides


def batch_panel_lines(info: dict[str, Any] | None, limit: int = 6) -> list[str]:
    """Job lines for the panel from ``batch_ops.batch_summary`` (empty for a live run)."""
    if not info:
        return []
    lines = [f"batch: {info['steps']} step(s), {info['submitted_jobs']} job(s), "
             f"{info['submitted_requests']:,} requests; {info['results_ok']:,} results ok, "
             f"{info['results_failed']:,} failed rows"]
    for job in info["jobs"][-limit:]:
        counts = job.get("counts") or {}
        lines.append(f"  {job['key']} {job['status']:<11} "
                     f"{counts.get('completed', 0)}/{counts.get('total', job['requests'])}  "
                     f"next: {job['next']}")
    lines.append(f"next: {info['next']}")
    return lines


class BatchMixin:
    """Batch-mode methods of the self-chat screen (see the module docstring)."""

    runner: Any
    worker: Any
    run_dir: Path | None
    summary: dict[str, Any] | None
    _events: list[Any]
    _final_message: str
    app: Any
    is_attached: bool
    query_one: Any

    def _via(self) -> str:
        value = self.query_one("#sc-via", Select).value
        return value if value in ("live", "batch") else "live"

    @property
    def batch_mode(self) -> bool:
        """Whether the current (or last) run goes through the Batch API."""
        from baize_tui.selfchat.batch import BatchRunner

        return isinstance(self.runner, BatchRunner)

    def _launch_batch(self, run_config: Any, seeds: list[Any], store: Any, api_key: str) -> None:
        from baize_tui.config import load_config
        from baize_tui.selfchat.batch import BatchOptions, BatchRunner
        from baize_tui.selfchat.batch_ops import batch_discount

        try:
            config = load_config()
            poll = (config.get("selfchat") or {}).get("batch_poll_seconds", BATCH_POLL_SECONDS)
            options = BatchOptions(poll_interval=max(0.01, float(poll)),
                                   discount=batch_discount(config))
            self.runner = BatchRunner(run_config, seeds, store, api_key=api_key, options=options,
                                      on_event=self._events.append)
        except Exception as exc:  # shown, never raised
            store.close()
            self.query_one("#sc-start", Button).disabled = False
            self._message(f"{type(exc).__name__}: {exc}", True)  # type: ignore[attr-defined]
            return
        self.run_dir = Path(store.dir)
        self._final_message = ""
        self.query_one("#sc-out", Input).disabled = True
        self._message(f"Batch run: {self.runner.stats.live} dialogue(s) to generate into "  # type: ignore[attr-defined]
                      f"{store.dir}; the screen may be closed while jobs run")
        runner = self.runner
        self.worker = self.app.run_worker(lambda: self._drive_batch(runner, store), name="selfchat",
                                          group="selfchat", thread=True, exit_on_error=False)
        self._buttons()  # type: ignore[attr-defined]

    def _drive_batch(self, runner: Any, store: Any) -> None:
        """The worker thread: run to the end (or until stopped), then report."""
        from baize_tui.selfchat.runner import FatalRunError

        message, error = "", False
        try:
            stats = runner.run()
            reason = stats.stop_reason or "finished"
            message = ("Finished." if reason == "finished" else
                       f"Stopped ({reason}); the jobs keep running at the provider, Start "
                       "collects them.")
        except FatalRunError as exc:
            message, error = str(exc), True
        except Exception as exc:  # the run must never take the app down
            message, error = f"the batch run failed: {type(exc).__name__}: {exc}", True
        finally:
            store.close()
            self._final_message = message
            if self.is_attached:
                try:
                    self.app.call_from_thread(self._finished, message, error)  # type: ignore[attr-defined]
                except RuntimeError:  # the app is shutting down
                    pass

    def _draw_batch(self, counters: Static) -> None:
        """Counters and job states of the running batch session."""
        from baize_tui.selfchat.batch_ops import batch_summary

        s = self.runner.stats
        cost = "unknown" if s.cost is None else f"${s.cost:.4f}"
        est = "" if s.estimate_cost is None else f"   estimate ${s.estimate_cost:.4f}"
        lines = [f"done {s.previously_done + s.done}/{s.total}   failed {s.failed}   "
                 f"rejected {s.rejected}   in progress {s.live}",
                 f"tokens {s.tokens_in + s.tokens_out:,}   cost {cost} (batch price){est}"]
        if s.last_error:
            lines.append(f"last error: {s.last_error}")
        counters.update(Text("\n".join(lines)))
        jobs = self.runner.jobs
        # redrawn only when a job or the results changed (the results can be 100k+ lines)
        key = (len(jobs.results), tuple((j.key, j.status, str(j.counts), j.downloaded, j.collected)
                                        for j in list(jobs.jobs)))
        if key != getattr(self, "_batch_drawn", None):
            self._batch_drawn = key
            info = batch_summary(self.runner.store.dir, jobs)
            self.query_one("#sc-batch", Static).update(Text("\n".join(batch_panel_lines(info))))
