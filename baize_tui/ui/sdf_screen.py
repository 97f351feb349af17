"""The SDF screen: Baize v2's self-distillation with feedback, from the terminal app.

Opened with F10. A thin shell over :mod:`baize_tui.sdf` (the twin of ``baize-tui sdf
run|status|export``). The form holds the prompts source, the model, the judge and N; *Start*
launches ``sdf run`` as a detached background process (:mod:`baize_tui.sdf.process`), so a run keeps going when the app
closes and the screen re-attaches when it is opened again. Once a second the screen reads the
run directory: live counters, the histogram of best scores, and one prompt's candidates side by
side with their scores (``[`` / ``]`` browse prompts). Pause freezes the process, Stop lets the
work in flight finish and be saved, Export writes ``DIR/best.jsonl`` for ``train run``.
Model output is shown as plain text only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Button, Footer, Input, Label, Static

from baize_tui.errors import UserError
from baize_tui.paths import get_paths

_FIELDS = ("prompts", "out", "model", "model-url", "n", "max-tokens", "judge", "judge-url",
           "concurrency")


def default_run_dir() -> Path:
    """Where SDF runs go unless another directory is typed."""
    return get_paths().data_dir / "sdf" / "run"


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def candidates_table(rec: dict[str, Any], verdict: dict[str, Any] | None, width: int = 600) -> Table:
    """One prompt's candidates side by side, each headed by its score (★ marks the best)."""
    table = Table(title=_clip(rec.get("prompt", ""), 200), expand=True, show_lines=False)
    scores = (verdict or {}).get("scores") or []
    best = (verdict or {}).get("best")
    cells = []
    for k, cand in enumerate(rec.get("candidates") or []):
        score = f" · {scores[k]}" if k < len(scores) else ""
        star = " ★" if k == best else ""
        table.add_column(f"#{k + 1}{score}{star}", ratio=1,
                         style="bold" if k == best else None)
        cells.append(Text(_clip(cand.get("text", ""), width)))
    if cells:
        table.add_row(*cells)
    return table


class SdfScreen(Screen[None]):
    """Self-distillation with feedback: options, live progress, candidates, export."""

    HELP_TITLE = "SDF"

    DEFAULT_CSS = """
    SdfScreen { layout: vertical; }
    SdfScreen .title { text-style: bold; padding: 0 1; }
    SdfScreen #sdf-body { height: 1fr; }
    SdfScreen #sdf-form { width: 40%; min-width: 34; max-width: 52; height: 1fr; padding: 0 1;
                          border-right: vkey $primary; }
    SdfScreen #sdf-form Label { margin-top: 1; color: $text-muted; }
    SdfScreen .buttons { height: auto; margin-top: 1; }
    SdfScreen .buttons Button { margin-right: 1; min-width: 9; }
    SdfScreen #sdf-live { width: 1fr; height: 1fr; padding: 0 1; }
    SdfScreen #sdf-counters { height: auto; }
    SdfScreen #sdf-hist { height: auto; margin-top: 1; }
    SdfScreen #sdf-cands { height: 1fr; margin-top: 1; border: round $secondary; }
    SdfScreen #sdf-message { height: auto; color: $warning; }
    """

    BINDINGS = [
        Binding("ctrl+g", "start", "Start", id="sdf.start"),  # one keymap: Ctrl+G starts
        Binding("ctrl+x", "stop", "Stop", id="sdf.stop"),
        Binding("left_square_bracket", "browse(-1)", "Prev prompt", id="sdf.prev"),
        Binding("right_square_bracket", "browse(1)", "Next prompt", id="sdf.next"),
    ]

    def __init__(self, name: str | None = None, id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.summary: dict[str, Any] | None = None
        self.watcher: Any = None  # baize_tui.sdf.status.RunWatcher of the run directory
        self.view_index = 0
        self.running = False

    def compose(self) -> ComposeResult:
        yield Static("Self-distillation with feedback (Baize v2)", classes="title")
        with Horizontal(id="sdf-body"):
            with VerticalScroll(id="sdf-form"):
                labels = {
                    "prompts": "Prompts: a file or quora/stackoverflow/medquad",
                    "out": "Run directory (the same one resumes)",
                    "model": "Model: PATH.gguf, hf:BASE+LORA or openai:MODEL",
                    "model-url": "Model server URL (openai:MODEL only)",
                    "n": "Candidates per prompt", "max-tokens": "Max tokens per candidate",
                    "judge": "Judge: openai:MODEL",
                    "judge-url": "Judge URL (default: config / OPENAI_BASE_URL)",
                    "concurrency": "Judge requests in flight"}
                defaults = {"out": str(default_run_dir()), "n": "4", "max-tokens": "512",
                            "judge": "openai:gpt-4o-mini", "concurrency": "8"}
                for key in _FIELDS:
                    yield Label(labels[key])
                    yield Input(defaults.get(key, ""), id=f"sdf-{key}", compact=True)
                with Horizontal(classes="buttons"):
                    yield Button("Start", id="sdf-start", variant="primary", compact=True)
                    yield Button("Pause", id="sdf-pause", compact=True)
                    yield Button("Stop", id="sdf-stop", variant="error", compact=True)
                    yield Button("Export", id="sdf-export", compact=True)
                yield Static("", id="sdf-message")
            with Vertical(id="sdf-live"):
                yield Static("no run yet", id="sdf-counters")
                yield Static("", id="sdf-hist")
                yield Static("", id="sdf-cands")
        yield Footer()

    # ------------------------------------------------------------------ state

    def value(self, key: str) -> str:
        """The text of form field ``key``."""
        return self.query_one(f"#sdf-{key}", Input).value.strip()

    @property
    def run_dir(self) -> Path:
        """The run directory named in the form."""
        return Path(self.value("out") or str(default_run_dir())).expanduser()

    def on_mount(self) -> None:
        self._fill_from_disk()
        self.refresh_status()
        self.set_interval(1.0, self.refresh_status)

    def _fill_from_disk(self) -> None:
        from baize_tui.sdf.store import JUDGE_STATE, SAMPLE_STATE, read_state

        try:
            sample = read_state(self.run_dir / SAMPLE_STATE) or {}
            judge = read_state(self.run_dir / JUDGE_STATE) or {}
        except UserError:
            return
        cfg, jcfg = sample.get("config") or {}, judge.get("config") or {}
        values = {"prompts": (sample.get("prompts") or {}).get("source"), "model": cfg.get("model"),
                  "n": cfg.get("n"), "max-tokens": cfg.get("max_tokens"), "judge": f"openai:{jcfg['model']}" if jcfg.get("model") else None}
        for key, val in values.items():
            if val:
                self.query_one(f"#sdf-{key}", Input).value = str(val)

    def refresh_status(self) -> None:
        """Re-read the run directory and redraw counters, histogram and candidates."""
        from baize_tui.sdf import process
        from baize_tui.sdf.status import RunWatcher, histogram_lines

        directory = self.run_dir
        self.running = process.alive(directory)
        state = "paused" if self.running and process.paused(directory) else \
            "running" if self.running else "idle"
        self.query_one("#sdf-pause", Button).label = "Resume" if state == "paused" else "Pause"
        if not (directory / "candidates.jsonl").exists():
            self.query_one("#sdf-counters", Static).update(f"{state} · nothing sampled yet")
            return
        if self.watcher is None or self.watcher.dir != directory:
            self.watcher = RunWatcher(directory)
        try:
            info = self.watcher.poll().summary()
        except (UserError, OSError) as exc:
            self.query_one("#sdf-counters", Static).update(str(exc))
            return
        self.summary = info
        cost = "" if info["judge_cost"] is None else f" · ${info['judge_cost']:.4f}"
        self.query_one("#sdf-counters", Static).update(
            f"{state} · prompts {info['prompts'] or '?'} · sampled {info['sampled']} "
            f"(failed {info['sample_failed']}) · judged {info['judged']} (failed "
            f"{info['judge_failed']}, ties {info['ties']}) · mean best "
            f"{info['mean_best'] if info['mean_best'] is not None else '-'} · judge tokens "
            f"{info['judge_tokens_in'] + info['judge_tokens_out']:,}{cost}")
        self.query_one("#sdf-hist", Static).update(
            Text("best score per prompt\n" + "\n".join(histogram_lines(info["best_histogram"], 24))))
        self._show_candidates()

    def _show_candidates(self) -> None:
        watcher = self.watcher
        if watcher is None or not watcher.cand_offsets:
            return
        total = len(watcher.cand_offsets)
        self.view_index %= total
        rec = watcher.candidates_at(self.view_index)
        if rec is None:
            return
        table = candidates_table(rec, watcher.verdicts.get(rec["id"]))
        table.caption = f"prompt {self.view_index + 1}/{total} · [ and ] browse"
        self.query_one("#sdf-cands", Static).update(table)

    def message(self, text: str) -> None:
        """Show a one-line notice under the buttons."""
        self.query_one("#sdf-message", Static).update(Text(text))

    # ------------------------------------------------------------------ actions

    def action_browse(self, step: int) -> None:
        """Show the previous/next prompt's candidates."""
        self.view_index += step
        self._show_candidates()

    def action_start(self) -> None:
        """Launch ``sdf run`` in the background with the form's settings."""
        from baize_tui.sdf import process

        try:
            argv = self._argv()
            pid = process.start(self.run_dir, argv)
        except UserError as exc:
            self.message(str(exc))
            return
        self.message(f"started (pid {pid}); it keeps going if the app closes; log: "
                     f"{self.run_dir / process.LOG}")
        self.refresh_status()

    def _argv(self) -> list[str]:
        from baize_tui.sdf import process

        for key in ("prompts", "model", "judge"):
            if not self.value(key):
                raise UserError(f"{key}: required")
        if not self.value("judge").startswith("openai:"):
            raise UserError("judge: expected openai:MODEL")
        try:
            n, conc = int(self.value("n") or 4), int(self.value("concurrency") or 8)
            max_tokens = int(self.value("max-tokens") or 512)
        except ValueError:
            raise UserError("candidates, max tokens and requests in flight are whole numbers") from None
        if min(n, conc, max_tokens) < 1:
            raise UserError("candidates, max tokens and requests in flight must be at least 1")
        return process.pipeline_argv(self.run_dir.absolute(), prompts=self.value("prompts"),
                                     model=self.value("model"), judge=self.value("judge"), n=n,
                                     model_url=self.value("model-url") or None,
                                     judge_url=self.value("judge-url") or None,
                                     judge_concurrency=conc, max_tokens=max_tokens)

    def action_stop(self) -> None:
        """Let the work in flight finish, then end the run (resumable)."""
        from baize_tui.sdf import process

        self.message("stopping after the work in flight" if process.stop(self.run_dir)
                     else "no run is going")

    def action_toggle_pause(self) -> None:
        """Pause or resume the background run."""
        from baize_tui.sdf import process

        if process.paused(self.run_dir):
            process.resume(self.run_dir)
            self.message("resumed")
        elif process.pause(self.run_dir):
            self.message("paused")
        else:
            self.message("no run is going")
        self.refresh_status()

    def action_export(self) -> None:
        """Write ``DIR/best.jsonl`` (prompt + best reply, chat-messages JSONL)."""
        from baize_tui.sdf.export import export_best

        try:
            result = export_best(self.run_dir, self.run_dir / "best.jsonl")
        except UserError as exc:
            self.message(str(exc))
            return
        self.message(f"wrote {result.written} prompt(s) to {result.path}; train on it with "
                     "`baize-tui train run --init-adapter SFT_ADAPTER --data ...`")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        actions = {"sdf-start": self.action_start, "sdf-stop": self.action_stop,
                   "sdf-pause": self.action_toggle_pause, "sdf-export": self.action_export}
        action = actions.get(event.button.id or "")
        if action is not None:
            action()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "sdf-out":
            self._fill_from_disk()
            self.refresh_status()
