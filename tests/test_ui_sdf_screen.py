"""The SDF screen, driven with Textual's Pilot: it starts a real background ``sdf run`` (tiny
GGUF through llama.cpp, judge on the local OpenAI-compatible server), shows live counters, the
histogram and one prompt's candidates side by side, exports, and re-attaches when reopened."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from openai_server import OpenAITestServer
from sdf_helpers import read_jsonl, scripted_judge
from textual.app import App
from textual.widgets import Input, Static
from ui_helpers import settled, wait_until

from baize_tui.errors import UserError
from baize_tui.sdf import process
from baize_tui.ui.sdf_screen import SdfScreen


class Host(App[None]):
    """A bare app showing only the SDF screen."""

    def on_mount(self) -> None:
        self.push_screen(SdfScreen())


def text_of(screen: SdfScreen, selector: str) -> str:
    """What a Static shows, as plain text (tables rendered at 160 columns)."""
    from rich.console import Console

    console = Console(width=160, record=True, file=io.StringIO())
    console.print(screen.query_one(selector, Static).content)
    return console.export_text()


async def test_start_watch_browse_export_and_reattach(tiny_gguf: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is a llama?\nHow do rivers form?\nWhy is the sky blue?\n")
    out = tmp_path / "sdf-run"
    try:
        await _run_screen(tiny_gguf, prompts, out)
    finally:  # never leave the background process behind
        if process.alive(out):
            process.stop(out)
            await wait_for_exit(out)
    # reopening re-attaches to the run on disk: the form and counters come back
    app = Host()
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.screen
        screen.query_one("#sdf-out", Input).value = str(out)
        screen.query_one("#sdf-out", Input).focus()
        await pilot.press("enter")
        await pilot.pause()
        assert screen.value("model") == str(tiny_gguf) and screen.value("n") == "3"
        assert "judged 3" in text_of(screen, "#sdf-counters")


async def wait_for_exit(out: Path, timeout: float = 30.0) -> None:
    import asyncio
    import signal
    import time

    deadline = time.monotonic() + timeout
    while process.alive(out) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if process.alive(out):
        os.killpg(process.info(out)["pid"], signal.SIGKILL)


async def _run_screen(tiny_gguf: Path, prompts: Path, out: Path) -> None:
    with OpenAITestServer(scripted_judge) as server:
        app = Host()
        async with app.run_test(size=(160, 50)) as pilot:
            screen = app.screen
            assert isinstance(screen, SdfScreen)
            for key, value in {"prompts": str(prompts), "out": str(out), "model": str(tiny_gguf),
                               "n": "3", "max-tokens": "10", "judge": "openai:judge", "judge-url": server.base_url,
                               "concurrency": "2"}.items():
                screen.query_one(f"#sdf-{key}", Input).value = value
            await pilot.click("#sdf-start")
            await wait_until(pilot, lambda: screen.summary is not None
                             and screen.summary["judged"] == 3, timeout=120)
            await wait_until(pilot, lambda: not process.alive(out), timeout=30)
            screen.refresh_status()
            counters = text_of(screen, "#sdf-counters")
            assert "sampled 3" in counters and "judged 3" in counters
            assert sum(screen.summary["best_histogram"].values()) == 3
            assert "best score per prompt" in text_of(screen, "#sdf-hist")
            verdicts = read_jsonl(out / "judgments.jsonl")
            cands = read_jsonl(out / "candidates.jsonl")
            first = text_of(screen, "#sdf-cands")
            v0 = next(v for v in verdicts if v["id"] == cands[0]["id"])
            assert f"#{v0['best'] + 1} · {v0['scores'][v0['best']]} ★" in first
            await pilot.press("right_square_bracket")
            await pilot.pause()
            assert "prompt 2/3" in text_of(screen, "#sdf-cands")
            await pilot.click("#sdf-export")
            await pilot.pause()
            assert len(read_jsonl(out / "best.jsonl")) == 3
            assert "wrote 3 prompt(s)" in text_of(screen, "#sdf-message")


async def test_bad_form_values_are_reported_not_started(tmp_path: Path) -> None:
    app = Host()
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.screen
        screen.query_one("#sdf-out", Input).value = str(tmp_path / "r")
        screen.query_one("#sdf-prompts", Input).value = "p.txt"
        screen.query_one("#sdf-model", Input).value = "m.gguf"
        screen.query_one("#sdf-judge", Input).value = "gpt-4o"
        await pilot.click("#sdf-start")
        await pilot.pause()
        assert "openai:MODEL" in text_of(screen, "#sdf-message")
        assert not (tmp_path / "r" / process.PIPELINE).exists()


async def test_f10_opens_the_sdf_screen_in_the_app() -> None:
    from ui_helpers import ScriptedEngine

    from baize_tui.ui.app import BaizeApp

    engine = ScriptedEngine(["ok"])
    app = BaizeApp(model="scripted", engine_factory=lambda spec, config, n_ctx: engine)
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.press("f10")
        await wait_until(pilot, lambda: isinstance(app.screen, SdfScreen))
        await pilot.press("f5")
        await wait_until(pilot, lambda: not isinstance(app.screen, SdfScreen))


def both_roles(body: dict) -> str:
    """Candidates for sampling requests, scores for judge requests (one server for both)."""
    if body["messages"][0]["role"] == "system":
        return scripted_judge(body)
    return f"An answer about {body['messages'][0]['content']} #{len(body['messages'])}"


async def test_pause_resume_stop_then_start_again_resumes(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"Question {i}?\n" for i in range(40)))
    out = tmp_path / "run"
    cands = out / "candidates.jsonl"

    def lines() -> int:
        return cands.read_bytes().count(b"\n") if cands.exists() else 0

    with OpenAITestServer(both_roles, latency=0.25) as server:
        app = Host()
        try:
            async with app.run_test(size=(160, 50)) as pilot:
                screen = app.screen
                for key, value in {"prompts": str(prompts), "out": str(out), "model": "openai:baize",
                                   "model-url": server.base_url, "n": "2", "judge": "openai:judge",
                                   "judge-url": server.base_url}.items():
                    screen.query_one(f"#sdf-{key}", Input).value = value
                await pilot.click("#sdf-start")
                await wait_until(pilot, lambda: lines() >= 3, timeout=60)
                await pilot.click("#sdf-pause")
                await wait_until(pilot, lambda: process.paused(out), timeout=30)
                screen.refresh_status()
                assert text_of(screen, "#sdf-counters").startswith("paused")
                assert str(screen.query_one("#sdf-pause").label) == "Resume"
                await settled(pilot)  # the relabelled button is laid out before it is clicked
                await pilot.click("#sdf-pause")  # now "Resume"
                await wait_until(pilot, lambda: not process.paused(out), timeout=30)
                before = lines()
                await wait_until(pilot, lambda: lines() > before, timeout=30)
                await pilot.click("#sdf-stop")
                await wait_until(pilot, lambda: not process.alive(out), timeout=30)
                stopped_at = lines()
                assert stopped_at < 40, "the run finished before it could be stopped"
                await pilot.click("#sdf-start")  # the same settings resume
                await wait_until(pilot, lambda: screen.summary is not None
                                 and screen.summary["judged"] == 40, timeout=120)
                await wait_until(pilot, lambda: not process.alive(out), timeout=30)
        finally:
            if process.alive(out):
                process.stop(out)
                await wait_for_exit(out)
    recs = read_jsonl(cands)
    assert sorted(r["prompt"] for r in recs) == sorted(f"Question {i}?" for i in range(40))
    assert len({v["id"] for v in read_jsonl(out / "judgments.jsonl")}) == 40
    assert "interrupted" in (out / process.LOG).read_text()


async def test_train_screen_takes_an_init_adapter(tiny: dict[str, Path], tmp_path: Path) -> None:
    from baize_tui.ui.train_screen import TrainScreen

    class TrainHost(App[None]):
        def on_mount(self) -> None:
            self.push_screen(TrainScreen())

    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, '
                    '{"role": "assistant", "content": "hello"}]}\n')
    app = TrainHost()
    async with app.run_test(size=(170, 60), notifications=False) as pilot:
        await wait_until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        for key, value in {"base": str(tiny["llama"]), "data": str(data),
                           "init-adapter": str(tiny["lora_st"])}.items():
            screen.query_one(f"#tr-{key}", Input).value = value
        assert screen.read_config().init_adapter == str(tiny["lora_st"])
        screen.query_one("#tr-init-adapter", Input).value = str(tmp_path / "missing")
        with pytest.raises(UserError, match="--init-adapter"):
            screen.read_config()
