"""The training screen's run half: launch and resume in a thread, convert, watch a run.

Mixed into :class:`~baize_tui.ui.train_screen.TrainScreen` (which keeps the form, the preview
and the key and button handlers: Textual's ``@on`` handlers must be defined on the screen class
itself). The run view only reads the run directory's files (``status.json``,
``metrics.jsonl``, ``train.log``) once a second, so closing the TUI never touches the run.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import work
from textual.widgets import Button, Input, Log, ProgressBar, Select, Sparkline, Static

from baize_tui.errors import OperationFailed, UserError
from baize_tui.formatting import fmt_eta
from baize_tui.paths import get_paths

log = logging.getLogger("baize_tui.ui")
_ERRORS = (UserError, OperationFailed, OSError)

def error_text(exc: BaseException) -> str:
    """The message to show for ``exc``: a user-facing error's own words, else its type too."""
    return str(exc) if isinstance(exc, _ERRORS) else f"{type(exc).__name__}: {exc}"


MAX_POINTS = 400  # loss points kept for the plot
log = logging.getLogger("baize_tui.ui")


def _num(value: Any, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


class TrainRunMixin:
    """Run methods of the training screen (see the module docstring)."""

    run: Any | None
    status: dict[str, Any]
    alive: bool
    losses: list[float]
    eval_losses: list[float]
    last_train: dict[str, Any]
    _metrics_tail: Any | None
    _log_tail: Any | None
    _busy: bool
    _run_options: list[str]
    run_labels: dict[str, str]
    app: Any
    query_one: Any
    notify: Any
    prevent: Any
    _value: Any
    fill_form: Any

    @work(thread=True, exclusive=True, group="train-launch", exit_on_error=False)
    def _start(self, config: Any, out: Path) -> None:
        from baize_tui.train.runs import start_run

        try:
            run = start_run(config, out)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._launch_failed, error_text(exc))
            return
        self.app.call_from_thread(self._launched, run, f"Started {run.dir}")

    def _launch_failed(self, message: str) -> None:
        self._set_busy(False)
        self._message(message, True)

    def _launched(self, run: Any, message: str) -> None:
        self._set_busy(False)
        self._message(message)
        self.attach(run)
        self.refresh_runs()
        # a fresh default directory for the next run
        self.query_one("#tr-out", Input).value = str(
            get_paths().runs_dir / time.strftime("run-%Y%m%d-%H%M%S"))

    @work(thread=True, exclusive=True, group="train-launch", exit_on_error=False)
    def _resume(self, directory: Path) -> None:
        from baize_tui.train.runs import resume_run

        try:
            run = resume_run(directory)
        except Exception as exc:  # shown, never raised
            self.app.call_from_thread(self._launch_failed, error_text(exc))
            return
        self.app.call_from_thread(self._launched, run, f"Resumed {run.dir}")

    def _set_busy(self, busy: bool) -> None:
        self._busy = busy
        self.query_one("#tr-start", Button).disabled = busy
        self._buttons()

    @work(thread=True, exclusive=True, group="train-convert", exit_on_error=False)
    def _convert(self, adapter: Path, quant: str, output: Path) -> None:
        from baize_convert.pipeline import MergeRequest, run_merge

        last = [0.0]

        def progress(_stage: str, done: int, total: int | None) -> None:
            now = time.monotonic()
            if total is None or done >= total or now - last[0] > 0.1:
                last[0] = now
                self.app.call_from_thread(self._convert_progress, done, total)

        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            result = run_merge(MergeRequest(base=None, loras=[str(adapter)], quant=quant,
                                            output=output), quiet=True, progress_cb=progress)
        except Exception as exc:  # ConvertError and friends: shown, never raised into the UI
            self.app.call_from_thread(self._converted, None, error_text(exc))
            return
        self.app.call_from_thread(self._converted, result.output, "")

    def _convert_progress(self, done: int, total: int | None) -> None:
        self.query_one("#tr-convert-progress", ProgressBar).update(total=total, progress=done)

    def _converted(self, output: Path | None, error: str) -> None:
        self._set_busy(False)
        self.query_one("#tr-convert-progress", ProgressBar).display = False
        if output is None:
            self._message(error, True)
            return
        self._message(f"Wrote {output}; pick it on the Models screen to chat with it.")
        self.notify(f"Converted to {output.name}", markup=False)

    def refresh_runs(self, attach: bool = False) -> None:
        """Re-read the list of runs; ``attach`` picks a live run, else the newest."""
        from baize_tui.train.runs import list_runs

        try:
            runs = list_runs()
        except _ERRORS as exc:
            self._message(f"cannot list runs: {exc}", True)
            return
        select = self.query_one("#tr-runs", Select)
        options = []
        for run in reversed(runs):  # newest first
            state = run.status().get("state", "?")
            options.append((f"{run.dir.name} ({state})", str(run.dir)))
        self._run_options = [v for _, v in options]
        #: what the runs list shows for each run directory
        self.run_labels = {value: label for label, value in options}
        with self.prevent(Select.Changed):
            select.set_options(options)
            if self.run is not None and any(v == str(self.run.dir) for _, v in options):
                select.value = str(self.run.dir)
        if attach and self.run is None and runs:
            live = [r for r in runs if r.alive()]
            self.attach((live or runs)[-1])

    def attach(self, run: Any) -> None:
        """Watch ``run`` from its files (from the start of its metrics and the end of its log);
        an empty form takes the run's settings."""
        if not self._value("base") and not self._value("data"):
            try:
                self.fill_form(run.config())
            except Exception:  # an unreadable config.toml: the run is still watched
                log.debug("could not read %s", run.config_file, exc_info=True)
        self.run = run
        self.losses, self.eval_losses, self.last_train = [], [], {}
        self.status, self.alive = {}, False
        self._metrics_tail = run.metrics_tail()
        self._log_tail = run.log_tail()
        self.query_one("#tr-log", Log).clear()
        select = self.query_one("#tr-runs", Select)
        with self.prevent(Select.Changed):
            if str(run.dir) in self._run_options:
                select.value = str(run.dir)
        self.poll()

    def poll(self) -> None:
        """Read what the trainer wrote since the last poll and redraw."""
        run = self.run
        if run is None or self._metrics_tail is None or self._log_tail is None:
            self._buttons()
            return
        records, reset = self._metrics_tail.read_new()
        if reset:
            self.losses, self.eval_losses, self.last_train = [], [], {}
        for record in records:
            if record.get("kind") == "train" and record.get("loss") is not None:
                self.losses.append(float(record["loss"]))
                self.last_train = record
            elif record.get("kind") == "eval" and record.get("eval_loss") is not None:
                self.eval_losses.append(float(record["eval_loss"]))
        if records or reset:
            self.losses = self.losses[-MAX_POINTS:]
            self.eval_losses = self.eval_losses[-MAX_POINTS:]
            self.query_one("#tr-loss", Sparkline).data = list(self.losses)
            self.query_one("#tr-eval", Sparkline).data = list(self.eval_losses)
            self._plot_labels()
        text = self._log_tail.read_new()
        if text:
            self.query_one("#tr-log", Log).write(text)
        state = self.status.get("state")
        self.status = run.status()
        self.alive = run.alive()  # a stopped trainer may still be writing its last lines
        if state is not None and self.status.get("state") != state:
            self.refresh_runs()  # the list names each run's state: keep it true
        self._draw_status()
        self._buttons()

    def _plot_labels(self) -> None:
        def describe(name: str, values: list[float]) -> str:
            if not values:
                return f"{name}: -"
            return (f"{name}: {values[-1]:.4f} now, first {values[0]:.4f}, "
                    f"min {min(values):.4f} ({len(values)} points)")

        self.query_one("#tr-loss-label", Static).update(Text(describe("loss", self.losses)))
        self.query_one("#tr-eval-label", Static).update(
            Text(describe("eval loss", self.eval_losses)))

    def _draw_status(self) -> None:
        assert self.run is not None
        s, last = self.status, self.last_train
        step = s.get("step", last.get("step", 0))
        max_steps = s.get("max_steps", last.get("max_steps")) or "?"
        mem = last.get("mem_reserved_mb") or last.get("mem_alloc_mb")
        lines = [
            f"{self.run.dir}",
            f"state {s.get('state', '?')}   step {step}/{max_steps}   "
            f"epoch {_num(last.get('epoch'), '.2f')}   ETA {fmt_eta(s.get('eta_s'))}",
            f"loss {_num(last.get('loss'))}   eval loss "
            f"{_num(self.eval_losses[-1] if self.eval_losses else None)}   "
            f"lr {_num(last.get('lr'), '.2e')}   tokens/s {_num(last.get('tokens_per_s'), '.0f')}"
            f"   GPU memory {'-' if mem is None else f'{mem:.0f} MB'}",
        ]
        if last.get("raw_tokens_per_s") is not None:
            pad = last.get("padding_fraction") or 0.0
            lines.append(f"useful tokens/s {_num(last.get('useful_tokens_per_s'), '.0f')}   "
                         f"raw tokens/s {_num(last.get('raw_tokens_per_s'), '.0f')}   "
                         f"padding {100 * pad:.1f}%")
        if s.get("message"):
            lines.append(str(s["message"]))
        self.query_one("#tr-status", Static).update(Text("\n".join(lines)))

    def _buttons(self) -> None:
        from baize_tui.train.runs import ACTIVE_STATES

        state = self.status.get("state") if self.run is not None else None
        active = state in ACTIVE_STATES
        self.query_one("#tr-stop", Button).disabled = not active
        self.query_one("#tr-kill", Button).disabled = not active
        self.query_one("#tr-resume", Button).disabled = (
            self._busy or self.run is None or active or self.alive
            or state in ("completed", "new", None))
        adapter_ready = self.run is not None and \
            (self.run.adapter_dir / "adapter_config.json").exists()
        self.query_one("#tr-convert", Button).disabled = (
            self._busy or state != "completed" or not adapter_ready)

    def _message(self, text: str, error: bool = False) -> None:
        self.query_one("#tr-message", Static).update(Text(text, style="red" if error else ""))
        if error:
            self.notify(text, severity="error", markup=False)
