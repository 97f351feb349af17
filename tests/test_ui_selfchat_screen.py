"""The self-chat screen, driven with Textual's Pilot against a real OpenAI-compatible server
on 127.0.0.1 (tests/openai_server.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from openai_server import OpenAITestServer
from textual.app import App
from textual.widgets import Button, Input, RichLog, Sparkline, Static
from ui_helpers import press_effect_over, settled, wait_until

from baize_tui.paths import get_paths
from baize_tui.ui.dialogs import ConfirmDialog
from baize_tui.ui.screens import PromptScreen
from baize_tui.ui.selfchat_screen import SelfChatScreen

TOPIC = re.compile(r"topic: '(.*)'\. Human statements", re.S)


def scripted(body: dict) -> str:
    """A well-formed v1 transcript about the seed found in the prompt (one seed fails)."""
    seed = TOPIC.search(body["messages"][-1]["content"]).group(1)
    if seed.endswith("7?"):
        return "no tags here at all"  # rejected: no [AI] turn
    return (f"[Human] Tell me about {seed}.\n[AI] {seed} is a fine topic.\n"
            f"[Human] Why?\n[AI] Because of {seed}.\n[Human] Thanks!")


class Host(App[None]):
    """A bare app showing only the self-chat screen."""

    def on_mount(self) -> None:
        self.push_screen(SelfChatScreen())


def real_app_in_selfchat_mode() -> App[None]:
    """The real BaizeApp (with a scripted chat engine) switched to the self-chat mode, so its
    own quit action is what is tested."""
    from ui_helpers import ScriptedEngine

    from baize_tui.ui.app import BaizeApp

    engine = ScriptedEngine(["ok"])

    class SelfChatFirst(BaizeApp):
        def on_ready(self) -> None:
            self.switch_mode("selfchat")

    return SelfChatFirst(model="scripted", engine_factory=lambda spec, config, n_ctx: engine)



def text_of(screen: SelfChatScreen, selector: str) -> str:
    return str(screen.query_one(selector, Static).render())


async def test_start_watch_stop_export_and_reattach(tmp_path: Path) -> None:
    seeds = tmp_path / "seeds.txt"
    # 300 seeds, 2 at a time, 0.15 s each: 20 s or more, so the run is still going when the
    # test pauses and stops it, however loaded the machine is.
    n_seeds = 300
    seeds.write_text("\n".join(f"Question number {i}?" for i in range(n_seeds)) + "\n")
    out = get_paths().selfchat_dir / "run-a"
    with OpenAITestServer(scripted, latency=0.15) as server:
        app = Host()
        async with app.run_test(size=(160, 50), notifications=False) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SelfChatScreen))
            screen = app.screen
            assert isinstance(screen, SelfChatScreen)
            await pilot.click("#sc-start")  # an empty form names the missing field
            assert text_of(screen, "#sc-message").startswith("Seeds:")
            assert screen.runner is None
            screen.query_one("#sc-seeds", Input).value = str(seeds)
            screen.query_one("#sc-out", Input).value = str(out)
            screen.query_one("#sc-model", Input).value = "test-model"
            screen.query_one("#sc-base-url", Input).value = server.base_url
            screen.query_one("#sc-concurrency", Input).value = "2"
            # the template preview shows the first seed of the file, as plain text
            await wait_until(pilot, lambda: "'Question number 0?'" in text_of(screen, "#sc-preview"))
            assert text_of(screen, "#sc-preview").startswith("Forget the instruction")

            await press_effect_over(pilot, "#sc-start")
            await pilot.click("#sc-start")
            await wait_until(pilot, lambda: screen.runner is not None and screen.running,
                             why=lambda: text_of(screen, "#sc-message"))
            stats = screen.runner.stats
            await wait_until(pilot, lambda: stats.done >= 4 and stats.rejected >= 1,
                             why=lambda: text_of(screen, "#sc-counters"))
            rate = screen.query_one("#sc-rate", Sparkline)
            await wait_until(pilot, lambda: max(rate.data or [0]) > 0)  # sampled once a second
            counters = text_of(screen, "#sc-counters")  # drawn by the same tick
            assert re.search(rf"done \d+/{n_seeds}", counters) and "dialogues/min" in counters
            assert screen.query_one("#sc-stop", Button).disabled is False
            assert screen.query_one("#sc-start", Button).disabled is True
            assert len(screen.query_one("#sc-dialogues", RichLog).lines) > 0

            def failures() -> str:
                return "\n".join(s.text for s in screen.query_one("#sc-failures", RichLog).lines)

            # the counter moves at once; the failure list is drawn on the screen's next tick
            await wait_until(pilot, lambda: "no_human_turn" in failures() or "rejected" in failures(),
                             why=failures)

            # pause holds new requests; resume carries on
            await pilot.click("#sc-pause")
            assert screen.runner.paused
            await press_effect_over(pilot, "#sc-pause")
            await pilot.click("#sc-pause")
            assert not screen.runner.paused

            await pilot.click("#sc-stop")
            await wait_until(pilot, lambda: not screen.running, timeout=10)
            await wait_until(pilot, lambda: "Stopped (stopped)" in text_of(screen, "#sc-message"),
                             why=lambda: text_of(screen, "#sc-message"))
            assert screen.query_one("#sc-start", Button).disabled is False
            done = stats.done
            assert 4 <= done < n_seeds - 1
            lines = (out / "raw.jsonl").read_text().splitlines()
            assert len(lines) == done
            assert len({json.loads(line)["id"] for line in lines}) == done

            await pilot.click("#sc-export")  # asks where, offering the run directory's file
            await wait_until(pilot, lambda: isinstance(app.screen, PromptScreen))
            target = out / "export-baize.json"
            assert app.screen.query_one("#answer", Input).value == str(target)
            await pilot.press("enter")
            await wait_until(pilot, target.exists)
            assert len(json.loads(target.read_text())) == done

        # a new app re-attaches to the run from its files: the form and the counts
        app2 = real_app_in_selfchat_mode()
        async with app2.run_test(size=(160, 50), notifications=False) as pilot:
            await wait_until(pilot, lambda: isinstance(app2.screen, SelfChatScreen))
            screen2 = app2.screen
            assert isinstance(screen2, SelfChatScreen)
            await wait_until(pilot, lambda: screen2.summary is not None)
            await settled(pilot)  # the form filled from the summary is drawn
            assert screen2.query_one("#sc-out", Input).value == str(out)
            assert screen2.query_one("#sc-model", Input).value == "test-model"
            assert screen2.query_one("#sc-seeds", Input).value == str(seeds)
            assert text_of(screen2, "#sc-counters").startswith(f"done {done}/{n_seeds}")

            # Start resumes: the remaining seeds, none twice; the app's exit hook stops it
            await pilot.click("#sc-start")
            await wait_until(pilot, lambda: screen2.running and screen2.runner.stats.done >= 2,
                             why=lambda: text_of(screen2, "#sc-message"))
            assert screen2.runner.stats.previously_done == done
            await pilot.press("ctrl+q")  # quitting asks first: the run is going
            await wait_until(pilot, lambda: isinstance(app2.screen, ConfirmDialog))
            assert "resumable" in str(app2.screen.question)
            await pilot.press("y")  # leaving the app stops the run gracefully
        stats2 = screen2.runner.stats
        assert stats2.stop_reason == "app exit" and stats2.in_flight == 0
        ids = [json.loads(line)["id"] for line in (out / "raw.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) == done + stats2.done  # in-flight ones were saved
        assert done + stats2.done < n_seeds - 1  # stopped, not finished: the rest resume next time


async def test_continues_a_run_started_on_the_command_line(tmp_path: Path) -> None:
    """Settings the form does not show (sampling, seed field, shuffle, limit) come from the
    run itself, so the screen resumes a CLI run instead of refusing it or reading other seeds."""
    import os
    import subprocess
    import sys

    seeds = tmp_path / "seeds.csv"
    seeds.write_text("question,answer\n" + "".join(f"Question number {i}?,x\n" for i in range(40)))
    out = get_paths().selfchat_dir / "cli-run"
    with OpenAITestServer(scripted, latency=0.05) as server:
        cli = subprocess.run(
            [sys.executable, "-m", "baize_tui.cli", "selfchat", "run", "--seeds", str(seeds),
             "--seed-field", "question", "--shuffle", "3", "--limit", "6", "--out", str(out),
             "--model", "test-model", "--base-url", server.base_url, "--temperature", "0.7",
             "--max-tokens", "300"],
            capture_output=True, text=True, env=dict(os.environ), timeout=120)
        assert cli.returncode == 0, cli.stderr
        first_ids = {json.loads(line)["id"] for line in (out / "raw.jsonl").read_text().splitlines()}
        app = Host()
        async with app.run_test(size=(160, 50), notifications=False) as pilot:
            await wait_until(pilot, lambda: isinstance(app.screen, SelfChatScreen))
            screen = app.screen
            screen.query_one("#sc-seeds", Input).value = str(seeds)
            screen.query_one("#sc-out", Input).value = str(out)
            screen.query_one("#sc-model", Input).value = "test-model"
            screen.query_one("#sc-base-url", Input).value = server.base_url
            await wait_until(pilot, lambda: screen.summary is not None)  # the CLI run, read
            await settled(pilot)
            await pilot.click("#sc-start")
            await wait_until(pilot, lambda: screen.runner is not None and not screen.running,
                             timeout=30, why=lambda: text_of(screen, "#sc-message"))
            assert "other settings" not in text_of(screen, "#sc-message")
            assert screen.runner.stats.previously_done == len(first_ids)
    sent = [r.body for r in server.requests]
    assert all(b.get("temperature") == 0.7 and b.get("max_tokens") == 300 for b in sent)
    ids = [json.loads(line)["id"] for line in (out / "raw.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and set(ids) == first_ids  # the same six seeds, once each
