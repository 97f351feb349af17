"""The self-chat screen in Batch API mode, driven with Pilot against tests/batch_server.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

from batch_server import BatchTestServer
from textual.app import App
from textual.widgets import Input, Select, Static
from ui_helpers import press_effect_over, settled, wait_until

from baize_tui.config import set_value
from baize_tui.paths import get_paths
from baize_tui.ui.selfchat_screen import SelfChatScreen

TOPIC = re.compile(r"topic: '(.*)'\. Human statements", re.S)


def scripted(body: dict) -> str:
    seed = TOPIC.search(body["messages"][-1]["content"]).group(1)
    return f"[Human] Tell me about {seed}\n[AI] {seed} is fine.\n[Human] Thanks!"


class Host(App[None]):
    def on_mount(self) -> None:
        self.push_screen(SelfChatScreen())


def text_of(screen: SelfChatScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_batch_mode_close_while_jobs_run_then_reopen_and_collect(tmp_path: Path) -> None:
    set_value("selfchat.batch_poll_seconds", 0.02)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("".join(f"Question number {i}?\n" for i in range(5)))
    out = get_paths().selfchat_dir / "batch-run"
    with BatchTestServer(scripted, polls_per_state=10_000) as server:  # stuck in validation
        app = Host()
        async with app.run_test(size=(160, 50), notifications=False) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SelfChatScreen))
            screen = app.screen
            assert isinstance(screen, SelfChatScreen)
            screen.query_one("#sc-seeds", Input).value = str(seeds)
            screen.query_one("#sc-out", Input).value = str(out)
            screen.query_one("#sc-model", Input).value = "test-model"
            screen.query_one("#sc-base-url", Input).value = server.base_url
            screen.query_one("#sc-via", Select).value = "batch"
            await settled(pilot)  # the form's changes handled before Start
            await pilot.click("#sc-start")
            await wait_until(pilot, lambda: "s001-01 validating" in text_of(screen, "#sc-batch"),
                             why=lambda: text_of(screen, "#sc-message"))
            assert screen.batch_mode and screen.running
            await screen.stop_gracefully()  # what the app does on exit: the jobs stay open
            assert not screen.running
        assert len(server.batches) == 1 and not (out / "raw.jsonl").exists()

        server.polls_per_state = 1
        app2 = Host()
        async with app2.run_test(size=(160, 50), notifications=False) as pilot:
            await wait_until(pilot, lambda: isinstance(app2.screen, SelfChatScreen))
            screen2 = app2.screen
            assert isinstance(screen2, SelfChatScreen)
            screen2.query_one("#sc-out", Input).value = str(out)
            # reopening shows where the jobs are, and the run's settings (batch included)
            await wait_until(pilot, lambda: "s001-01 validating" in text_of(screen2, "#sc-batch"))
            assert screen2.query_one("#sc-via", Select).value == "batch"
            assert screen2.query_one("#sc-seeds", Input).value == str(seeds)
            screen2.query_one("#sc-via", Select).value = "live"  # would pay for the jobs twice
            await settled(pilot)
            await pilot.click("#sc-start")
            await wait_until(pilot, lambda: "open batch jobs" in text_of(screen2, "#sc-message"))
            assert not screen2.running
            screen2.query_one("#sc-via", Select).value = "batch"
            await settled(pilot)
            await press_effect_over(pilot, "#sc-start")
            await pilot.click("#sc-start")
            await wait_until(pilot, lambda: screen2.runner is not None and not screen2.running,
                             why=lambda: text_of(screen2, "#sc-message"))
            await wait_until(pilot, lambda: text_of(screen2, "#sc-message") == "Finished.",
                             why=lambda: text_of(screen2, "#sc-message"))
            assert "s001-01 completed" in text_of(screen2, "#sc-batch")
            assert text_of(screen2, "#sc-counters").startswith("done 5/5")
    ids = [json.loads(x)["id"] for x in (out / "raw.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 5 and len(server.batches) == 1  # collected, not resubmitted
