"""Widgets of the chat screen: messages and the streaming reply.

The prompt box and the status line live in :mod:`baize_tui.ui.prompt_bar` (re-exported here:
``from baize_tui.ui.widgets import ChatInput, StatusBar`` keeps working).

Model output is only ever shown through :class:`~textual.widgets.Markdown` (which never reads
Rich markup) or as plain :class:`~rich.text.Text`; if Markdown fails on some text, the message
falls back to plain text instead of taking the app down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.binding import Binding
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.dom import NoScreen
from textual.errors import NoWidget
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownBlock, MarkdownStream

from baize_tui.ui.prompt_bar import _SPINNER, ChatInput, StatusBar  # noqa: F401 (re-exported)

log = logging.getLogger("baize_tui.ui")

#: How often a streaming reply is redrawn, at most and at least (times a second): pieces
#: arriving in between are joined into one write. The last pieces are always written at once
#: when the reply ends.
STREAM_FPS = 10.0
STREAM_MIN_FPS = 2.0
#: The share of one core the app may spend on a streaming reply. Between those rates, the
#: redraw rate follows what the app's thread actually spent since the last write (drawing,
#: layout, everything): a slow or busy machine gets fewer, larger updates instead of a UI that
#: eats the core the model needs.
STREAM_CPU_BUDGET = 0.18



def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced and indented code blocks of a Markdown text, as (language, code) pairs."""
    from markdown_it import MarkdownIt

    blocks = []
    for token in MarkdownIt("gfm-like").parse(text):
        if token.type in ("fence", "code_block"):
            blocks.append(((token.info or "").strip().split(" ")[0], token.content))
    return blocks


@dataclass
class MessageInfo:
    """What a message view shows besides its text (all optional)."""

    message_id: int | None = None
    branch: tuple[int, int] | None = None  # (position from 1, count) when there are siblings
    finish_reason: str | None = None
    interrupted: bool = False
    completion_tokens: int | None = None
    tokens_per_s: float | None = None
    ttft_s: float | None = None


class ReplyBody(Vertical):
    """The text of a reply: Markdown *segments*, rendered as one document.

    While a reply streams, only the last segment (the live tail) changes. Once it holds
    :data:`SEGMENT_CHARS`, the next top-level block that starts goes into a new live segment,
    so each write lays out one segment's blocks, not the whole reply's: a finished segment
    keeps the blocks the stream drew, and its layout stays cached (see :class:`LayoutBreak`).
    The gap between segments is made equal to the collapsed margin inside one document, so
    the screen is the same as a one-shot render of the whole text.
    """


class LayoutBreak(Widget):
    """An empty, zero-height first child of a streamed Markdown segment.

    Textual lays out a container whose children *all* have ``height: auto`` against its
    parent's current height, so each write that grows the live segment would lay out every
    finished segment again, block by block. One child with a fixed height makes a finished
    segment's layout independent of its parent's: it is computed once and then served from
    Textual's cache, and the finished part of a reply costs next to nothing per frame.
    """

    DEFAULT_CSS = "LayoutBreak { height: 0; }"


#: A live segment takes no new top-level block once it holds this many characters.
SEGMENT_CHARS = 1200
#: Loop turns an append waits, screen updates held, for its new widgets to ask for layout.
SETTLE_TURNS = 4


class Segment(Markdown):
    """A Markdown document whose appends are laid out once, when the new blocks are complete.

    Left alone, a streamed append is laid out twice: the screen lays out the new blocks as
    soon as they are mounted, and again once their own children (a list item's paragraph,
    a quote's text) report that they need layout, which they only do when something next
    wakes them, such as that first layout. Here screen updates are held while the append
    runs, the new widgets are prompted to report, and then one layout takes it all.
    """

    def append(self, markdown: str) -> AwaitComplete:
        before = set(self.children)
        appended = super().append(markdown)

        async def append_settled() -> None:
            with updates_held(self):
                await appended
                for block in self.children:
                    if block not in before:  # new, or re-created by this append
                        for widget in block.walk_children(Widget, with_self=True):
                            widget.check_idle()
                for _ in range(SETTLE_TURNS):
                    await asyncio.sleep(0)

        return AwaitComplete(append_settled())


@contextmanager
def updates_held(widget: Widget) -> Iterator[None]:
    """Hold the app's screen updates (layout and drawing) for the block, then wake the
    screen: it took the block's layout requests while updates were held, and would otherwise
    run that layout only when something next woke it."""
    try:
        with widget.app.batch_update():
            yield
    finally:
        if widget.is_attached:
            widget.screen.check_idle()


def _top_level_starts(text: str) -> list[int]:
    """Line numbers where the top-level blocks of ``text`` start."""
    from markdown_it import MarkdownIt

    return [t.map[0] for t in MarkdownIt("gfm-like").parse(text)
            if t.level == 0 and t.map is not None and t.nesting >= 0]


class MessageView(Vertical, can_focus=True):
    """One message of the transcript: a header line and the text.

    User messages are plain text; replies are Markdown. A reply being generated is fed
    through :meth:`start_stream` / :meth:`feed` / :meth:`finish_stream`. Focus a message
    (click or Tab) to copy it (``c``), copy its last code block (``k``) or browse its
    branches (``←``/``→``).
    """

    #: the name over the assistant's replies: Baize, or the model's name for other formats
    assistant_name = "Baize"

    BINDINGS = [
        Binding("left", "branch(-1)", "Previous branch", id="message.branch_prev"),
        Binding("right", "branch(1)", "Next branch", id="message.branch_next"),
        Binding("c", "copy", "Copy message", id="message.copy"),
        Binding("k", "copy_code", "Copy code block", id="message.copy_code"),
        Binding("e", "edit", "Edit (a new branch from here)", id="message.edit"),
    ]

    class EditRequested(Message):
        """Asks the screen to put this (user) message in the prompt box for editing."""

        def __init__(self, view: MessageView) -> None:
            super().__init__()
            self.view = view

    class BranchRequested(Message):
        """Asks the screen to show a sibling branch of this message."""

        def __init__(self, view: MessageView, step: int) -> None:
            super().__init__()
            self.view = view
            self.step = step

    class CopyRequested(Message):
        """Asks the screen to copy this message (``code=True``: its last code block)."""

        def __init__(self, view: MessageView, code: bool) -> None:
            super().__init__()
            self.view = view
            self.code = code

    def __init__(self, role: str, text: str = "", info: MessageInfo | None = None) -> None:
        super().__init__(classes=f"message {role}")
        self.role = role
        self.text = text
        self.info = info or MessageInfo()
        self.streaming = False
        self._stream: MarkdownStream | None = None
        self._live: Markdown | None = None
        self._live_text = ""
        self._pending: list[str] = []
        self._last_write = 0.0
        self._interval = 1.0 / STREAM_FPS  # until the next write (see _pace)
        self._cpu_mark: float | None = None
        self._plain = False
        self._spin = 0

    # ---- composition

    def compose(self) -> ComposeResult:
        yield Static(self._header(), classes="message-header", markup=False)
        if self.role == "user":
            yield Static(Text(self.text), classes="message-body user-body")
        else:
            with ReplyBody(classes="message-body reply-body"):
                yield Segment(self.text, classes="segment")

    @property
    def body(self) -> Widget:
        """The widget holding the text (a :class:`ReplyBody` for replies)."""
        return self.query_one(".message-body")

    @property
    def segments(self) -> list[Markdown]:
        """The Markdown segments of a reply, in order."""
        try:
            body = self.body
        except NoMatches:  # not composed yet
            return []
        return [child for child in body.children if isinstance(child, Markdown)]

    def _header(self) -> Text:
        who = "You" if self.role == "user" else self.assistant_name
        header = Text(who, style="bold")
        info = self.info
        if info.branch and info.branch[1] > 1:
            header.append(f"  ‹ {info.branch[0]}/{info.branch[1]} ›", style="bold")
        notes: list[str] = []
        if self.streaming:
            notes.append(f"{_SPINNER[self._spin % len(_SPINNER)]} generating")
        elif info.finish_reason == "cancelled":
            notes.append("stopped")
        elif info.finish_reason == "length":
            notes.append("cut at the length limit")
        elif info.finish_reason == "error":
            notes.append("failed")
        elif info.interrupted:
            notes.append("incomplete")
        if self.role == "assistant" and not self.streaming:
            if info.completion_tokens:
                notes.append(f"{info.completion_tokens} tokens")
            if info.tokens_per_s:
                notes.append(f"{info.tokens_per_s:.1f} tok/s")
        if notes:
            header.append("  " + " · ".join(notes), style="dim")
        return header

    def refresh_header(self) -> None:
        """Redraw the header after :attr:`info` changed (one line: no layout needed)."""
        try:
            self.query_one(".message-header", Static).update(self._header(), layout=False)
        except Exception:  # not mounted yet
            pass

    def set_info(self, info: MessageInfo) -> None:
        """Replace the header facts and redraw."""
        self.info = info
        self.refresh_header()

    # ---- text

    async def set_text(self, text: str) -> None:
        """Show a whole new text in one go (not for streaming)."""
        self.text = text
        if self.role == "user" or self._plain:
            self.body.update(Text(text))  # type: ignore[attr-defined]
            return
        body = self.body
        try:
            segment = Segment(classes="segment")
            with self.app.batch_update():
                await body.remove_children()
                await body.mount(segment)
            await segment.update(text)
        except Exception:
            log.exception("Markdown failed; showing plain text")
            await self._fall_back_to_plain()

    async def _fall_back_to_plain(self) -> None:
        """Show the reply as plain text (after a Markdown rendering error)."""
        self._plain = True
        self._stream = None
        body = self.body
        await body.remove_children()
        await body.mount(Static(Text(self.text), classes="plain-body"))

    def start_stream(self) -> None:
        """Begin streaming a reply into this (empty) view; call from the event loop."""
        self.streaming = True
        segments = self.segments
        self._live = segments[-1] if segments else None
        self._live_text = ""
        self._interval, self._cpu_mark = 1.0 / STREAM_FPS, None
        if self._live is not None:
            self._live.mount(LayoutBreak(), before=0)
            self._stream = Markdown.get_stream(self._live)
        self._last_write = time.monotonic()
        self.refresh_header()

    def spin(self) -> None:
        """Advance the 'generating' spinner in the header (drawn only while the header is in
        view: redrawing a widget scrolled out of view makes Textual rebuild its map of all
        widgets, a whole-screen arrangement per spinner frame)."""
        if self.streaming:
            self._spin += 1
            if self._header_in_view():
                self.refresh_header()

    def _header_in_view(self) -> bool:
        try:
            geometry = self.screen.find_widget(self.query_one(".message-header"))
        except (NoMatches, NoScreen, NoWidget):
            return False
        return geometry.clip.overlaps(geometry.region)

    def next_write_in(self) -> float | None:
        """Seconds until pending text is due to be written, or None when nothing is pending."""
        if not self._pending:
            return None
        return max(0.0, self._last_write + self._interval - time.monotonic())

    async def feed(self, piece: str) -> None:
        """Add streamed text; it is drawn when the next write is due (see
        :data:`STREAM_CPU_BUDGET`)."""
        self.text += piece
        self._pending.append(piece)
        if time.monotonic() - self._last_write >= self._interval:
            await self.flush()

    def _pace(self) -> None:
        """Set the time to the next write from the CPU this thread used since the last one."""
        cpu = time.thread_time()
        if self._cpu_mark is not None:
            wanted = (cpu - self._cpu_mark) / STREAM_CPU_BUDGET
            smoothed = (self._interval + wanted) / 2
            self._interval = min(1.0 / STREAM_MIN_FPS, max(1.0 / STREAM_FPS, smoothed))
        self._cpu_mark = cpu

    async def flush(self) -> None:
        """Write whatever streamed text is pending, now."""
        if not self._pending:
            return
        chunk = "".join(self._pending)
        self._pending.clear()
        self._last_write = time.monotonic()
        self._pace()
        if self._plain:
            self.body.query_one(Static).update(Text(self.text))
            return
        if self._live is None:
            return
        try:
            if len(self._live_text) >= SEGMENT_CHARS and "\n" in chunk:
                if await self._write_across_segments(chunk):
                    return
            self._live_text += chunk
            if self._stream is not None:
                # One append at a time: the previous write must have landed first, or a stop
                # of the stream could race its appends (see _stop_stream).
                async with self._live.lock:
                    pass
                # That append may have re-created the live segment's first block.
                self._match_margins(last=2)
                await self._stream.write(chunk)
            else:  # the stream has ended (the last words): append them directly
                await self._live.append(chunk)
        except Exception:
            log.exception("Markdown failed; showing plain text")
            await self._fall_back_to_plain()

    async def _write_across_segments(self, chunk: str) -> bool:
        """If a new top-level block starts in ``chunk``, end the live segment just before it
        and start the next segment with it; False (nothing written) if none starts there.

        The segment left behind ends exactly where a block of the whole text ends, so it
        draws the same as that part of a one-shot render.
        """
        assert self._live is not None
        combined = self._live_text + chunk
        starts = _top_level_starts(combined)
        if len(starts) < 2:
            return False
        lines = combined.splitlines(keepends=True)
        offset = sum(map(len, lines[:starts[-1]]))
        if offset < len(self._live_text):  # the last block began earlier: not a boundary
            return False
        rest, tail = combined[len(self._live_text):offset], combined[offset:]
        with updates_held(self):  # one layout for the old segment's end and the new one
            await self._stop_stream()
            if rest:
                await self._live.append(rest)
            live = Segment(classes="segment")
            await self.body.mount(live)
            await live.mount(LayoutBreak())
            # append, not update: after ``Markdown.update`` the next append parses from the
            # document's last line instead of its last block's first, and splits an open
            # block.
            await live.append(tail)
            self._live, self._live_text = live, tail
            if self.streaming:
                self._stream = Markdown.get_stream(live)
            self._match_margins(last=3)  # appending ``rest`` may have re-created its first block
        return True

    async def _stop_stream(self) -> None:
        """Stop the live segment's stream once everything written to it is drawn.

        ``MarkdownStream.stop`` cancels its task; an append still in flight then finishes in
        the background, and an append started before it lands would parse from a stale
        position (a code fence came out as paragraphs). So :meth:`flush` never writes while an
        append is in flight, and this waits for the segment's lock before anything else is
        appended.
        """
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.stop()
        if self._live is not None:
            async with self._live.lock:
                pass

    def _match_margins(self, last: int | None = None) -> None:
        """Give each gap between segments the collapsed margin one document would have:
        inside one document the gap is max(bottom, top); across two segments it would be
        bottom + top, so the lower block's top margin is cut by the upper one's bottom.
        (Run again whenever a segment's first block may have been re-created: a stream
        replaces the last block it wrote, and with it the margin set here. Only the gaps
        among the ``last`` segments, when given: the others no longer change.)"""
        segments = self.segments
        if last is not None:
            segments = segments[-last:]
        for before, after in zip(segments, segments[1:], strict=False):
            above = [b for b in before.children if isinstance(b, MarkdownBlock)]
            below = [b for b in after.children if isinstance(b, MarkdownBlock)]
            if not above or not below:
                continue
            bottom = above[-1].styles.margin.bottom
            first = below[0]
            top, right, under, left = first.styles.base.margin  # the CSS margin
            margin = (max(0, top - bottom), right, under, left)
            if tuple(first.styles.margin) != margin:
                first.styles.margin = margin

    async def finish_stream(self, final_text: str | None = None) -> None:
        """End the stream: write the last pieces immediately and settle the final text.

        ``final_text`` is the reply as saved. It can differ from what was streamed by what
        the stop filter held back (trailing whitespace, or the start of a stop string when the
        turn was stopped); the view then shows it.
        """
        if final_text is not None and final_text != self.text:
            if final_text.startswith(self.text):
                await self.feed(final_text[len(self.text):])
            elif final_text.rstrip() != self.text.rstrip():
                self._pending.clear()
                self.text = final_text
                await self._end_stream()
                await self.set_text(final_text)
                return
            self.text = final_text
        await self.flush()
        await self._end_stream()

    async def _end_stream(self) -> None:
        self.streaming = False
        try:
            await self._stop_stream()
            self._match_margins()
        except Exception:
            log.exception("Markdown stream failed; showing plain text")
            await self._fall_back_to_plain()
        self.refresh_header()

    # ---- actions

    def action_branch(self, step: int) -> None:
        self.post_message(self.BranchRequested(self, step))

    def action_edit(self) -> None:
        """Edit this message (a new branch from here)."""
        self.post_message(self.EditRequested(self))

    def action_copy(self) -> None:
        self.post_message(self.CopyRequested(self, code=False))

    def action_copy_code(self) -> None:
        self.post_message(self.CopyRequested(self, code=True))
