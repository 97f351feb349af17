"""The self-chat screen's live-run half: launch, drive, stop, export, and draw the counters.

Mixed into :class:`~baize_tui.ui.selfchat_screen.SelfChatScreen` (which keeps the form, the
preview and the key and button handlers: Textual's ``@on`` handlers must be defined on the
screen class itself). A live run is a :class:`~baize_tui.selfchat.runner.SelfChatRunner` on the
app's event loop in an app-level worker; its events are buffered in ``_events`` and
:meth:`SelfChatLiveMixin._tick` (a timer) draws them. The Batch API half is
:class:`~baize_tui.ui.selfchat_batch.BatchMixin`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.widgets import Button, Input, RichLog, Sparkline, Static
from textual.worker import WorkerState

from baize_tui.errors import OperationFailed, UserError
from baize_tui.formatting import fmt_eta
from baize_tui.ui.selfchat_batch import BatchMixin, batch_panel_lines

_ERRORS = (UserError, OperationFailed, OSError)

def error_text(exc: BaseException) -> str:
    """The message to show for ``exc``: a user-facing error's own words, else its type too."""
    return str(exc) if isinstance(exc, _ERRORS) else f"{type(exc).__name__}: {exc}"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


class _Note:
    """A runner-style event made by the screen itself (store warnings)."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        self.message = message
        self.record = None


class SelfChatLiveMixin(BatchMixin):
    """Live-run methods of the self-chat screen (see the module docstring)."""

    rates: deque[float]
    _last_rate_sample: float
    notify: Any

    @property
    def running(self) -> bool:
        """Whether a run is going (its worker has not finished)."""
        return self.worker is not None and self.worker.state in (WorkerState.PENDING,
                                                                 WorkerState.RUNNING)

    @staticmethod
    def _saved_state(out: Path) -> dict[str, Any] | None:
        """The run directory's state.json, if it already holds a run."""
        import json

        try:
            return json.loads((out / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @work(thread=True, exclusive=True, group="selfchat-prepare", exit_on_error=False)
    def _prepare(self, source: str, seed_options: dict[str, Any], out: Path, run_config: Any,
                 api_key: str) -> None:
        from baize_tui.selfchat.run import open_run
        from baize_tui.selfchat.seeds import load_seeds

        try:
            seeds = load_seeds(source, **seed_options)
            if not seeds:
                raise UserError(f"{source}: no seeds (after dropping empty lines and duplicates)")
            store = open_run(out, run_config, seeds, seeds_info={"source": source, **seed_options})
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._prepare_failed, error_text(exc))
            return
        self.app.call_from_thread(self._launch, run_config, seeds, store, api_key)

    def _prepare_failed(self, message: str) -> None:
        self.query_one("#sc-start", Button).disabled = False
        self._message(message, True)

    def _launch(self, run_config: Any, seeds: list[Any], store: Any, api_key: str) -> None:
        from baize_tui.selfchat.runner import SelfChatRunner

        for warning in store.warnings:
            self._events.append(_Note("notice", warning))
        if self._via() == "batch":
            self._launch_batch(run_config, seeds, store, api_key)
            return
        from baize_tui.selfchat.batch_ops import open_job_count

        if open_job_count(store.dir):
            store.close()
            self._prepare_failed(f"{store.dir} has open batch jobs: choose \"Batch API\" to "
                                 "collect them (a live run would pay for them twice)")
            return
        self.run_dir = Path(store.dir)
        self.runner = SelfChatRunner(run_config, seeds, store, api_key=api_key,
                                     on_event=self._events.append)
        self.rates = deque(maxlen=120)
        self._final_message = ""
        self.query_one("#sc-out", Input).disabled = True
        self._message(f"Running: {len(self.runner.todo)} dialogue(s) to generate into {store.dir}")
        # An app-level worker: it lives as long as the app, whichever screen is showing.
        self.worker = self.app.run_worker(self._drive(self.runner, store), name="selfchat",
                                          group="selfchat", exit_on_error=False)
        self._buttons()

    async def _drive(self, runner: Any, store: Any) -> None:
        from baize_tui.selfchat.runner import FatalRunError

        message, error = "", False
        try:
            stats = await runner.run()
            reason = stats.stop_reason or "finished"
            message = ("Finished." if reason == "finished" else
                       f"Stopped ({reason}); start again with the same settings to resume.")
        except FatalRunError as exc:
            message, error = str(exc), True
        except asyncio.CancelledError:
            message = "Interrupted; start again with the same settings to resume."
            raise
        except Exception as exc:  # the run must never take the app down
            message, error = f"the run failed: {type(exc).__name__}: {exc}", True
        finally:
            store.close()
            self._final_message = message
            if self.is_attached:
                self._finished(message, error)

    def _finished(self, message: str, error: bool) -> None:
        self._tick()
        self._message(message, error)
        self.query_one("#sc-out", Input).disabled = False
        self._buttons(running=False)

    def _buttons(self, running: bool | None = None) -> None:
        running = self.running if running is None else running
        self.query_one("#sc-start", Button).disabled = running
        pause = self.query_one("#sc-pause", Button)
        pause.disabled = not running or self.batch_mode
        pause.label = "Resume" if running and self.runner is not None and self.runner.paused \
            else "Pause"
        self.query_one("#sc-stop", Button).disabled = not running

    async def stop_gracefully(self, timeout: float = 10.0) -> None:
        """Stop the run and wait (up to ``timeout`` s) for in-flight dialogues to be saved.

        The app calls this before exiting; the run directory then resumes where it stopped.
        Past the timeout the worker is cancelled: unsaved in-flight dialogues are redone on resume.
        """
        worker, runner = self.worker, self.runner
        if worker is None or runner is None or not self.running:
            return
        runner.stop("app exit")
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(worker.wait())), timeout)
        except asyncio.TimeoutError:
            worker.cancel()
        except Exception:  # WorkerFailed / WorkerCancelled: it is over either way
            pass

    @work(thread=True, exclusive=True, group="selfchat-export", exit_on_error=False)
    def _export(self, run_dir: Path, fmt: str, target: Path) -> None:
        from baize_tui.selfchat.export import export_run

        try:
            result = export_run(run_dir, fmt, target)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._message, error_text(exc), True)
            return
        skipped = f" ({result.skipped} without a kept turn)" if result.skipped else ""
        self.app.call_from_thread(self._message,
                                  f"Exported {result.written} dialogue(s) to {result.path}{skipped}")

    # ------------------------------------------------------------------ drawing

    def _message(self, text: str, error: bool = False) -> None:
        self.query_one("#sc-message", Static).update(Text(text, style="red" if error else ""))
        if error:
            self.notify(text, severity="error", markup=False)

    def _tick(self) -> None:
        events = self._events[:]  # the runner holds self._events.append: empty it in place
        del self._events[:len(events)]
        if events:
            self._show_events(events)
        runner = self.runner
        if runner is not None and self.running and not self.batch_mode:
            now = time.monotonic()
            if now - self._last_rate_sample >= 1.0:
                self._last_rate_sample = now
                self.rates.append(runner.stats.per_minute())
                self.query_one("#sc-rate", Sparkline).data = list(self.rates)
            self._buttons()
        self._draw_counters()

    def _show_events(self, events: list[Any]) -> None:
        dialogues = self.query_one("#sc-dialogues", RichLog)
        failures = self.query_one("#sc-failures", RichLog)
        for event in events:
            record = event.record or {}
            if event.kind == "done":
                text = Text()
                text.append(_clip(record.get("seed", ""), 200) + "\n", style="bold")
                for human, ai in (record.get("turns") or [])[:6]:
                    text.append("Human: ", style="cyan")
                    text.append(_clip(human, 300) + "\n")
                    text.append("AI: ", style="green")
                    text.append(_clip(ai, 300) + "\n")
                dialogues.write(text)
            elif event.kind == "failed":
                text = Text()
                text.append(f"{record.get('reason', 'failed')}: ", style="bold red")
                text.append(_clip(record.get("seed", ""), 80) + " — ", style="dim")
                text.append(_clip(event.message, 300))
                failures.write(text)
            elif event.kind in ("error", "notice", "pause", "stop"):
                style = {"error": "bold red", "notice": "yellow"}.get(event.kind, "dim")
                text = Text(f"{event.kind}: ", style=style)
                text.append(_clip(event.message, 400))
                failures.write(text)

    def _draw_counters(self) -> None:
        counters = self.query_one("#sc-counters", Static)
        runner = self.runner
        if self.batch_mode:
            self._draw_batch(counters)
            return
        self.query_one("#sc-batch", Static).update(
            Text("\n".join(batch_panel_lines((self.summary or {}).get("batch")))))
        if runner is not None:
            s = runner.stats
            done = s.previously_done + s.done
            cost = "unknown" if s.cost is None else f"${s.cost:.4f}"
            lines = [
                f"done {done}/{s.total}   failed {s.failed}   rejected {s.rejected}   "
                f"in flight {s.in_flight}   retries {s.retries}",
                f"{s.per_minute():.1f} dialogues/min   tokens {s.tokens:,}   cost {cost}   "
                f"ETA {fmt_eta(s.eta()) if self.running else '-'}",
            ]
            pause = s.paused_until - time.monotonic()
            if self.running and runner.paused:
                lines.append("paused by you")
            elif self.running and pause > 0.5:
                lines.append(f"rate limited: every worker waits {pause:.0f}s")
            if s.reasons:
                lines.append("reasons: " + ", ".join(f"{k} {v}" for k, v in s.reasons.most_common()))
            counters.update(Text("\n".join(lines)))
            return
        info = self.summary
        if info is None:
            counters.update(Text("No run yet: fill in the form and press Start."))
            return
        cost = "unknown" if info.get("cost") is None else f"${info['cost']:.4f}"
        seeds = "?" if info.get("seeds") is None else info["seeds"]
        lines = [
            f"done {info['done']}/{seeds}   failed {info['failed']}   "
            f"rejected {info['rejected']}   remaining "
            f"{'?' if info.get('remaining') is None else info['remaining']}",
            f"tokens {info['tokens_in'] + info['tokens_out']:,}   cost {cost}   "
            f"model {info.get('model', '')} ({info.get('mode', '')})",
        ]
        if info.get("reasons"):
            lines.append("reasons: " + ", ".join(f"{k} {v}" for k, v in info["reasons"].items()))
        lines.append("Start continues this run where it stopped.")
        counters.update(Text("\n".join(lines)))
