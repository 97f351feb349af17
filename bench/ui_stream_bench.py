"""Benchmark: streaming a long Markdown reply through the chat screen, and start-up time.

Runs headless, in this process (the start-up case in a child process):

  anchor     the naive recipe: a bare Markdown widget in a scroller, one
             ``MarkdownStream.write`` per token (what the issue measured at ~93 % of a core)
  chat       baize-tui's chat screen: the real ChatSession, history and stop filter, with a
             scripted engine yielding the same reply at a fixed rate

For each it prints the UI's CPU time per token, its share of one core while streaming, and the
time from the last token to the frame that shows it. The chat run also checks that the final
transcript equals a one-shot render of the same text. Then it times ``baize-tui``'s start-up to
its first frame with 1,000 conversations in the history (target < 0.8 s).

    python bench/ui_stream_bench.py [--tokens 2000] [--rate 200] [--conversations 1000]
                                    [--turns 0] [--fixed-fps F] [--skip-anchor] [--skip-startup]

``--turns T`` opens a conversation with T earlier turns on screen first; ``--fixed-fps F``
redraws at a fixed rate instead of pacing by CPU (with pacing, a cheaper redraw shows up as
more redraws at the same share of a core, so compare versions with a fixed rate).

Targets (issue 6): < 25 % of one core at 200 tokens/s, last token on screen within 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

SIZE = (120, 40)


def reply_text(tokens: int) -> list[str]:
    """A deterministic Markdown reply (headings, lists, prose, code fences) split into
    ``tokens`` pieces of roughly LLaMA-token size."""
    sections = []
    n = 0
    while True:
        n += 1
        sections.append(
            f"## Step {n}: what to do\n\n"
            f"This part explains *step {n}* in some detail, with `inline code`, a "
            f"[link](https://example.com/{n}) and **bold text**, so that the paragraph wraps "
            "over more than one line of the terminal at the usual widths.\n\n"
            f"- first point of step {n}\n- second point, a bit longer than the first one\n"
            f"- third point\n\n"
            "```python\n"
            + "".join(f"def step_{n}_{i}(x: int) -> int:\n    return x * {i} + {n}  # c\n\n"
                      for i in range(6))
            + "```\n\n"
            "1. numbered item one\n2. numbered item two\n\n"
            "> A short quote to close the section.\n\n"
        )
        pieces = re.findall(r"\s*\S{1,4}|\s+", "".join(sections))
        if len(pieces) >= tokens:
            return pieces[:tokens]


class PacedEngine:
    """Yields the scripted pieces at a fixed rate (tokens/s); records when the last went out."""

    takes_messages = False

    def __init__(self, pieces: Sequence[str], rate: float) -> None:
        self.pieces = list(pieces)
        self.rate = rate
        self.spec = "bench-scripted"
        self.first_at: float | None = None
        self.last_at: float | None = None

    @property
    def n_ctx(self) -> int:
        return 32768

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def describe(self) -> str:
        return "scripted"

    def close(self) -> None:
        pass

    def stream(self, prompt: Any, params: Any, cancel: threading.Event | None = None, *,
               stop: Sequence[str] = ()) -> Any:
        from baize_tui.engines.base import Generation, TurnStats

        stats = TurnStats(prompt_tokens=self.count_tokens(prompt))
        cancel = cancel or threading.Event()

        def pieces() -> Iterator[str]:
            start = time.perf_counter()
            self.first_at = start
            for n, piece in enumerate(self.pieces):
                due = start + n / self.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if cancel.is_set():
                    break
                stats.completion_tokens = n + 1
                self.last_at = time.perf_counter()
                yield piece
            stats.finish_reason = "stop"

        return Generation(pieces(), stats)


async def _wait(pilot: Any, predicate: Any, timeout: float = 120.0, poll: float = 0.02) -> None:
    """Wait until ``predicate()`` holds. The poll is coarse on purpose: this loop runs in the
    app's process, and a tight one would count its own wake-ups as the app's CPU. (Times are
    taken by hooks where things happen, not here.)"""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit("benchmark timed out")
        await asyncio.sleep(poll)


def bench_anchor(pieces: list[str], rate: float) -> dict[str, float]:
    """The naive recipe: one MarkdownStream.write per token into a bare Markdown widget."""
    from textual.app import App, ComposeResult
    from textual.containers import VerticalScroll
    from textual.widgets import Markdown

    class Anchor(App[None]):
        def compose(self) -> ComposeResult:
            with VerticalScroll():
                yield Markdown()

    result: dict[str, float] = {}

    async def main() -> None:
        app = Anchor()
        async with app.run_test(size=SIZE) as pilot:
            md = app.query_one(Markdown)
            app.query_one(VerticalScroll).anchor()
            stream = Markdown.get_stream(md)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for n, piece in enumerate(pieces):
                due = wall0 + n / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await stream.write(piece)
            last = time.perf_counter()
            await stream.stop()
            await app.screen.wait_for_refresh()
            shown = time.perf_counter()
            cpu = time.process_time() - cpu0
            wall = shown - wall0
            result.update(cpu_per_token_ms=cpu / len(pieces) * 1000, core_share=cpu / wall,
                          last_token_to_frame_ms=(shown - last) * 1000, wall_s=wall)
            await pilot.pause()

    asyncio.run(main())
    return result


def capture_lines(widget: Any) -> list[Any]:
    """The lines ``widget`` (with everything inside it) shows, drawn by a compositor of its
    own (so a widget scrolled out of view is drawn too)."""
    from textual._compositor import Compositor
    from textual.geometry import Size

    size = widget.region.size
    compositor = Compositor()
    compositor.reflow(widget, Size(size.width, size.height))
    return compositor.render_strips()


def line_signature(widget: Any) -> list[list[tuple[str, str]]]:
    """What ``widget`` looks like on screen: per line, its runs of (text, style), with link
    and click metadata dropped (those name widgets, which differ between two renders)."""
    out = []
    for strip in capture_lines(widget):
        runs: list[tuple[str, str]] = []
        for seg in strip:
            style = str(seg.style.clear_meta_and_links()) if seg.style else ""
            if runs and runs[-1][1] == style:
                runs[-1] = (runs[-1][0] + seg.text, style)
            else:
                runs.append((seg.text, style))
        out.append(runs)
    return out


def earlier_turns(history: Any, turns: int) -> int | None:
    """A conversation with ``turns`` earlier question/answer pairs (Markdown answers with a
    list and a code fence), to have on screen while the new reply streams."""
    if not turns:
        return None
    cid = history.create_conversation(system_prompt="s", model="bench-scripted", params={})
    parent = None
    for n in range(turns):
        parent = history.add_message(cid, parent_id=parent, role="user",
                                     text=f"Question {n}: how does step {n} work?")
        answer = "".join(reply_text(120)) + f"\n\nThat was answer {n}."
        parent = history.add_message(cid, parent_id=parent, role="assistant", text=answer)
    return cid


def bench_chat(pieces: list[str], rate: float, turns: int = 0) -> dict[str, Any]:
    """The chat screen, end to end (session, history, stop filter, batched stream), with
    ``turns`` earlier turns of the conversation on screen."""
    from textual.screen import Screen

    from baize_tui.history import HistoryStore
    from baize_tui.ui.app import BaizeApp
    from baize_tui.ui.widgets import MessageView

    engine = PacedEngine(pieces, rate)
    result: dict[str, Any] = {}
    home = Path(tempfile.mkdtemp(prefix="baize-bench-"))
    os.environ["BAIZE_HOME"] = str(home)

    # When the whole reply was handed to the screen, and when the next frame was drawn.
    record: dict[str, Any] = {}
    full_text = "".join(pieces).strip()
    original_flush = MessageView.flush
    original_frame = Screen._compositor_refresh

    async def recording_flush(view: MessageView) -> None:
        before = len(view.text) - sum(map(len, view._pending))
        await original_flush(view)
        if len(view.text) > before:
            record["writes"] = record.get("writes", 0) + 1
        if "final_write" not in record and view.text.strip() == full_text:
            record["final_write"] = time.perf_counter()

    def recording_frame(screen: Screen) -> None:
        original_frame(screen)
        if "final_write" in record and "final_frame" not in record:
            record["final_frame"] = time.perf_counter()

    MessageView.flush = recording_flush  # type: ignore[method-assign]
    Screen._compositor_refresh = recording_frame  # type: ignore[method-assign]

    async def main() -> None:
        history = HistoryStore(home / "history.sqlite3")
        app = BaizeApp(model="bench-scripted", history=history,
                       engine_factory=lambda spec, config, n_ctx: engine,
                       start_conversation=earlier_turns(history, turns))
        async with app.run_test(size=SIZE) as pilot:
            await _wait(pilot, lambda: app.model_state == "ready")
            screen = app.screen
            await pilot.press(*"go", "enter")
            await _wait(pilot, lambda: engine.first_at is not None)
            cpu0 = time.process_time()
            wall0 = time.perf_counter()
            await _wait(pilot, lambda: "final_frame" in record)
            shown = record["final_frame"]
            await _wait(pilot, lambda: not screen.busy)
            await screen.wait_for_refresh()
            cpu = time.process_time() - cpu0
            wall = time.perf_counter() - wall0
            assert engine.last_at is not None and engine.first_at is not None
            view = list(screen.query(MessageView))[-1]
            text = screen.last_turn.text
            segments = len(view.segments)
            await pilot.pause(0.3)
            streamed = line_signature(view.body)
            # A one-shot render of the same text, for comparison.
            await view.set_text(text)
            await pilot.pause(0.3)
            oneshot = line_signature(view.body)
            saved = history.get_message(screen.last_turn.reply_message_id).text
            result.update(
                cpu_per_token_ms=cpu / len(pieces) * 1000, core_share=cpu / wall,
                last_token_to_frame_ms=(shown - engine.last_at) * 1000, wall_s=wall,
                identical_to_one_shot=streamed == oneshot,
                saved_equals_streamed=saved == text, segments=segments,
                lines=len(oneshot), chars=len(text),
                writes_per_s=record.get("writes", 0) / (engine.last_at - engine.first_at),
            )
        history.close()

    asyncio.run(main())
    return result


STARTUP_CHILD = r"""
import sys, time
t0 = float(sys.argv[1])
import logging
from baize_tui.ui.app import BaizeApp

class Timed(BaizeApp):
    def on_ready(self) -> None:
        self.call_after_refresh(self._done)
    def _done(self) -> None:
        print(f"FIRST_FRAME {time.time() - t0:.4f}", flush=True)
        self.exit()

Timed().run(headless=True)
"""


def bench_startup(conversations: int) -> dict[str, float]:
    """Process start to first frame of the app, with ``conversations`` saved chats."""
    from baize_tui.config import set_value
    from baize_tui.history import HistoryStore

    home = Path(tempfile.mkdtemp(prefix="baize-bench-start-"))
    env = dict(os.environ, BAIZE_HOME=str(home))
    os.environ["BAIZE_HOME"] = str(home)
    store = HistoryStore()
    for i in range(conversations):
        cid = store.create_conversation(system_prompt="s", model="m", params={})
        user = store.add_message(cid, parent_id=None, role="user", text=f"question number {i}")
        store.add_message(cid, parent_id=user, role="assistant", text=f"answer {i} " * 20)
    store.close()
    # A model that does not exist: its load fails in the background, after the first frame.
    set_value("model.default", str(home / "missing.gguf"))
    times = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", STARTUP_CHILD, repr(time.time())], env=env,
                             capture_output=True, text=True, timeout=60)
        match = re.search(r"FIRST_FRAME ([\d.]+)", out.stdout)
        if not match:
            raise SystemExit(f"start-up run failed:\n{out.stdout}\n{out.stderr}")
        times.append(float(match.group(1)))
    return {"first_frame_s_median": sorted(times)[1], "first_frame_s_min": min(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=0,
                        help="earlier turns of the conversation on screen while streaming")
    parser.add_argument("--fixed-fps", type=float, default=None,
                        help="redraw at this fixed rate instead of pacing by CPU (to compare "
                             "two versions' cost per redraw on a noisy machine)")
    parser.add_argument("--skip-anchor", action="store_true")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

    if args.fixed_fps:
        from baize_tui.ui import widgets

        widgets.STREAM_FPS = widgets.STREAM_MIN_FPS = args.fixed_fps
    pieces = reply_text(args.tokens)
    results: dict[str, Any] = {"tokens": len(pieces), "rate": args.rate,
                               "chars": len("".join(pieces))}
    if not args.skip_anchor:
        results["anchor"] = bench_anchor(pieces, args.rate)
    results["chat"] = bench_chat(pieces, args.rate, args.turns)
    if not args.skip_startup:
        results["startup"] = bench_startup(args.conversations)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"reply: {results['tokens']} tokens, {results['chars']} chars, {args.rate:g} tokens/s"
          + (f", {args.turns} earlier turns on screen" if args.turns else ""))
    for name in ("anchor", "chat"):
        if name not in results:
            continue
        r = results[name]
        writes = f"; {r['writes_per_s']:.1f} redraws/s" if "writes_per_s" in r else ""
        print(f"{name:7s} CPU {r['cpu_per_token_ms']:.3f} ms/token = {r['core_share']:.0%} of "
              f"one core; last token -> frame {r['last_token_to_frame_ms']:.0f} ms{writes}")
    chat = results["chat"]
    if "anchor" in results:
        print(f"chat/anchor CPU ratio: {chat['core_share'] / results['anchor']['core_share']:.2f}")
    print(f"final transcript identical to a one-shot render: {chat['identical_to_one_shot']}; "
          f"saved reply equals streamed: {chat['saved_equals_streamed']}")
    if args.skip_startup:
        return
    s = results["startup"]
    print(f"start-up to first frame with {args.conversations} conversations: "
          f"{s['first_frame_s_median']:.3f} s (median of 3; target < 0.8 s)")


if __name__ == "__main__":
    main()
