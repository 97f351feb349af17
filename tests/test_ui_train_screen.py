"""The training screen, driven with Textual's Pilot: a real (tiny, CPU) run is launched from the
form, its metrics arrive in the run view, and a new app re-attaches to it from its files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.app import App
from textual.widgets import Button, Input, Log, Select, Sparkline, Static
from ui_helpers import wait_until

from baize_tui.paths import get_paths
from baize_tui.selfchat.transcript import render_baize
from baize_tui.train.runs import ACTIVE_STATES, Run
from baize_tui.ui.train_screen import TrainScreen

DIALOGUES = [
    [("What is a LoRA adapter?", "A small low-rank update to the weights of a model."),
     ("Why use it?", "It trains fast and saves memory.")],
    [("Tell me a joke.", "Why did the chicken cross the road? To get to the other side!")],
    [("What is 2 + 2?", "2 + 2 = 4."), ("And 3 + 3?", "3 + 3 = 6.")],
]
STEPS = 4


@pytest.fixture(autouse=True)
def one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two shared cores: OpenMP spinning on both makes tiny steps much slower."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


class Host(App[None]):
    """A bare app showing only the training screen."""

    def on_mount(self) -> None:
        self.push_screen(TrainScreen())



def text_of(screen: TrainScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_launch_watch_and_reattach(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "baize.json"
    data.write_text(json.dumps([{"topic": d[0][0], "input": render_baize(d)}
                                for d in DIALOGUES * 8]))
    out = get_paths().runs_dir / "ui-run"
    app = Host()
    async with app.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        # the A100 preset fills the form
        screen.query_one("#tr-preset", Select).value = "baize-7b-a100"
        await wait_until(pilot, lambda: screen._preset_applied == "baize-7b-a100")
        assert screen.query_one("#tr-micro-batch-size", Input).value == "32"
        assert screen.query_one("#tr-batching", Select).value == "packing"
        screen.query_one("#tr-preset", Select).value = "baize"
        await wait_until(pilot, lambda: screen._preset_applied == "baize")  # before the fields
        values = {"base": str(tiny["llama"]), "data": str(data), "out": str(out),
                  "max-steps": str(STEPS), "batch-size": "4", "micro-batch-size": "4",
                  "cutoff-len": "96", "lr": "0.01", "eval-steps": "2"}
        for key, value in values.items():
            screen.query_one(f"#tr-{key}", Input).value = value
        screen.query_one("#tr-template", Select).value = "release"  # short: no system prompt

        # a bad field is named, nothing starts
        screen.query_one("#tr-batch-size", Input).value = "6"
        await pilot.click("#tr-start")
        assert "not a multiple" in text_of(screen, "#tr-message")
        screen.query_one("#tr-batch-size", Input).value = "4"

        # the sample preview highlights the trained (AI-turn) tokens
        await pilot.click("#tr-preview-btn")
        await wait_until(pilot, lambda: "trained (highlighted)" in text_of(screen, "#tr-preview"),
                         timeout=60, why=lambda: text_of(screen, "#tr-preview"))
        rendered = screen.query_one("#tr-preview", Static).render()
        styled = {str(span.style) for span in rendered.spans}
        assert any("on ansi_green" in s for s in styled) and "dim" in styled, styled

        await pilot.click("#tr-start")
        await wait_until(pilot, lambda: screen.run is not None,
                         why=lambda: text_of(screen, "#tr-message"))
        assert screen.run.dir == out
        await wait_until(pilot, lambda: len(screen.losses) >= 1, timeout=90,
                         why=lambda: text_of(screen, "#tr-status"))
        running = screen.status.get("state") in ACTIVE_STATES  # tiny runs end quickly
        assert screen.query_one("#tr-stop", Button).disabled is not running
        await wait_until(pilot, lambda: screen.status.get("state") == "completed", timeout=90,
                         why=lambda: text_of(screen, "#tr-status"))
        # the poll after the last step reads the last lines (the log may lag a little)
        await wait_until(pilot, lambda: len(screen.losses) == STEPS
                         and len(screen.eval_losses) == STEPS // 2)
        assert screen.query_one("#tr-loss", Sparkline).data == screen.losses
        status = text_of(screen, "#tr-status")
        assert f"state completed   step {STEPS}/{STEPS}" in status
        assert "tokens/s" in status
        assert "useful tokens/s" in status and "padding" in status
        assert screen.query_one("#tr-log", Log).line_count > 0
        assert not screen.query_one("#tr-convert", Button).disabled
        assert screen.query_one("#tr-stop", Button).disabled
        assert screen.query_one("#tr-resume", Button).disabled  # nothing to resume

        # convert to GGUF: the adapter merged into its base, into the models directory
        screen.query_one("#tr-quant", Input).value = "f16"
        await pilot.click("#tr-convert")
        gguf = get_paths().models_dir / "ui-run-F16.gguf"
        await wait_until(pilot, lambda: "Wrote" in text_of(screen, "#tr-message"), timeout=60,
                         why=lambda: text_of(screen, "#tr-message"))
        assert gguf.is_file()
        from baize_tui.models import describe

        assert not describe(gguf).broken
    assert Run(out).status()["state"] == "completed"

    # a new app (the TUI reopened) re-attaches to the run from its files
    app2 = Host()
    async with app2.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app2.screen, TrainScreen))
        screen2 = app2.screen
        assert isinstance(screen2, TrainScreen)
        await wait_until(pilot, lambda: screen2.run is not None and len(screen2.losses) == STEPS)
        assert screen2.run.dir == out
        assert screen2.losses == screen.losses
        assert screen2.query_one("#tr-runs", Select).value == str(out)
        assert screen2.run_labels[str(out)] == "ui-run (completed)"
        # the form shows the run's settings again, not an empty base and data
        assert screen2.query_one("#tr-base", Input).value == str(tiny["llama"])
        assert screen2.query_one("#tr-data", Input).value == str(data)
        assert screen2.query_one("#tr-max-steps", Input).value == str(STEPS)
        assert f"step {STEPS}/{STEPS}" in text_of(screen2, "#tr-status")
        assert not screen2.query_one("#tr-convert", Button).disabled


async def test_stop_then_resume_from_the_screen(tiny: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "baize.json"
    data.write_text(json.dumps([{"topic": d[0][0], "input": render_baize(d)}
                                for d in DIALOGUES * 8]))
    out = get_paths().runs_dir / "ui-stop"
    steps = 16
    app = Host()
    async with app.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        values = {"base": str(tiny["llama"]), "data": str(data), "out": str(out),
                  "max-steps": str(steps), "batch-size": "4", "micro-batch-size": "4",
                  "cutoff-len": "96", "lr": "0.01", "eval-steps": "50"}
        for key, value in values.items():
            screen.query_one(f"#tr-{key}", Input).value = value
        screen.query_one("#tr-template", Select).value = "release"
        await pilot.click("#tr-start")
        await wait_until(pilot, lambda: screen.run is not None and not
                         screen.query_one("#tr-stop", Button).disabled, timeout=30,
                         why=lambda: text_of(screen, "#tr-message"))
        await pilot.click("#tr-stop")  # tiny steps are fast: stop at once
        await wait_until(pilot, lambda: screen.status.get("state") == "stopped", timeout=30,
                         why=lambda: text_of(screen, "#tr-status"))
        stopped_at = screen.status["step"]
        await wait_until(pilot, lambda: screen.run_labels.get(str(out)) == "ui-stop (stopped)",
                         what="the runs list saying the run stopped",
                         why=lambda: str(screen.run_labels))
        assert stopped_at < steps
        resume = screen.query_one("#tr-resume", Button)
        await wait_until(pilot, lambda: not resume.disabled)  # once the trainer has exited
        await pilot.click("#tr-resume")
        await wait_until(pilot, lambda: screen.alive or screen.status.get("state") == "completed",
                         timeout=30,
                         why=lambda: text_of(screen, "#tr-message"))
    # the TUI closed while the resumed run goes on; a new one re-attaches and sees it end
    app2 = Host()
    async with app2.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app2.screen, TrainScreen))
        screen2 = app2.screen
        assert isinstance(screen2, TrainScreen)
        await wait_until(pilot, lambda: screen2.run is not None)
        assert screen2.run.dir == out
        await wait_until(pilot, lambda: screen2.status.get("state") == "completed", timeout=90,
                         why=lambda: text_of(screen2, "#tr-status"))
        await wait_until(pilot, lambda: len(screen2.losses) == steps)
    records = [r["step"] for r in Run(out).metrics() if r["kind"] == "train"]
    assert records == list(range(1, steps + 1))  # none repeated or skipped


async def test_preview_in_the_base_models_own_format(family: dict[str, Path],
                                                     tmp_path: Path) -> None:
    """Format "base" previews the dialogue in the base tokenizer's chat template (ChatML on the
    SmolLM-shaped base) with only the replies highlighted; a base without one is named."""
    data = tmp_path / "baize.json"
    data.write_text(json.dumps([{"topic": d[0][0], "input": render_baize(d)} for d in DIALOGUES]))
    app = Host()
    async with app.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        assert isinstance(screen, TrainScreen)
        screen.query_one("#tr-base", Input).value = str(family["smollm"])
        screen.query_one("#tr-data", Input).value = str(data)
        screen.query_one("#tr-template", Select).value = "base"
        await pilot.click("#tr-preview-btn")
        await wait_until(pilot, lambda: "trained (highlighted)" in text_of(screen, "#tr-preview"),
                         timeout=60, why=lambda: text_of(screen, "#tr-preview"))
        rendered = screen.query_one("#tr-preview", Static).render()
        assert "<|im_start|>assistant" in rendered.plain
        trained = "".join(rendered.plain[s.start:s.end] for s in rendered.spans
                          if "on ansi_green" in str(s.style))
        assert DIALOGUES[0][0][1] in trained and "<|im_start|>user" not in trained

        # the Mistral-shaped base in the fixture family has no chat template: one clear message
        screen.query_one("#tr-base", Input).value = str(family["mistral"])
        await pilot.click("#tr-preview-btn")
        await wait_until(pilot, lambda: "no chat template" in text_of(screen, "#tr-preview"),
                         timeout=60, why=lambda: text_of(screen, "#tr-preview"))
